//! A small per-thread pool of large `f32` buffers: dropped [`crate::Tensor`]s give theirs back
//! and kernels that overwrite their whole output take one ([`overwritable`]), so an inference
//! loop stops handing its largest arrays to the operating system and faulting fresh zeroed
//! pages back in every step.
//!
//! Why: glibc serves multi-megabyte allocations with `mmap` (or trims them off the heap top)
//! under a threshold that adapts to the program's history. With the fused eval kernels
//! ([`crate::kernels::lif::forward_eval_planes`]) their outputs were unmapped and faulted back
//! in every step: page faults and their lock contention took a quarter of a `mnist-cnn`
//! inference step at 2 threads, and fused inference ran slower than unfused (docs/perf.md).
//!
//! The pool is active only inside an [`EvalScope`] (which [`crate::nn::Network::forward`] opens
//! for eval passes): there layer outputs come from it ([`zeroed`], [`overwritable`]) and
//! dropped tensors go back to it. Training is untouched: pooling every training activation was
//! measured and rejected, since zero-filling a reused 25 MB buffer on one thread cost more than
//! the page faults it saved (`mnist-cnn` training step −28 %). Each thread keeps at most
//! [`MAX_POOLED_BYTES`], oldest dropped first; the buffers stay pooled between eval passes,
//! and a training forward empties the pool ([`crate::nn::Network::forward`]), so training
//! memory is unaffected by earlier evaluations.

use std::cell::{Cell, RefCell};

/// Buffers shorter than this (1 MiB of `f32`) go straight back to the allocator.
pub const MIN_POOLED_LEN: usize = 1 << 18;

/// The most a thread's pool keeps, in bytes. ResNet-19 inference at B = 64, T = 4 (largest
/// activation 134 MB): 256 MiB made it 8 % faster for 225 MB more peak RSS (510 → 735 MB);
/// 512 MiB gained nothing more for another 255 MB.
pub const MAX_POOLED_BYTES: usize = 256 << 20;

thread_local! {
    /// Per thread: layers allocate and drop activations on the thread that runs the model
    /// (rayon workers only run kernels on borrowed slices), so no lock is needed, and tests
    /// on different threads do not see each other's buffers.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn pooled_bytes(pool: &[Vec<f32>]) -> usize {
    pool.iter().map(|v| v.capacity() * 4).sum()
}

/// While alive, this thread's pool is active (see the module docs); scopes nest.
#[must_use = "the pool is active only while the scope lives"]
pub struct EvalScope {
    was_active: bool,
}

impl EvalScope {
    /// Activates this thread's pool until the scope is dropped.
    pub fn new() -> Self {
        EvalScope {
            was_active: ARMED.try_with(|a| a.replace(true)).unwrap_or(false),
        }
    }
}

impl Default for EvalScope {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EvalScope {
    fn drop(&mut self) {
        let _ = ARMED.try_with(|a| a.set(self.was_active));
    }
}

fn active() -> bool {
    ARMED.try_with(Cell::get).unwrap_or(false)
}

/// A vector of `len` zeros: a pooled buffer (capacity within 25 % above `len`) zero-filled,
/// inside an [`EvalScope`] when one fits; a fresh allocation otherwise.
pub fn zeroed(len: usize) -> Vec<f32> {
    match take(len) {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0.0);
            v
        }
        None => crate::kernels::elementwise::par_zeroed(len),
    }
}

/// A vector of `len` elements whose values are unspecified (a pooled buffer's old contents,
/// or zeros), for an output the caller overwrites completely; pooled as [`zeroed`].
pub fn overwritable(len: usize) -> Vec<f32> {
    match take(len) {
        Some(mut v) => {
            v.resize(len, 0.0);
            v.truncate(len);
            v
        }
        None => crate::kernels::elementwise::par_zeroed(len),
    }
}

fn take(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED_LEN || !active() {
        return None;
    }
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool
            .iter()
            .position(|v| v.capacity() >= len && v.capacity() - len <= len / 4)?;
        Some(pool.swap_remove(at))
    })
    .ok()
    .flatten()
}

/// Gives `buffer` to this thread's pool inside an [`EvalScope`] if it is large enough,
/// dropping the oldest pooled buffers to stay within [`MAX_POOLED_BYTES`]; otherwise frees it.
pub fn give_back(buffer: Vec<f32>) {
    let bytes = buffer.capacity() * 4;
    if buffer.capacity() < MIN_POOLED_LEN || bytes > MAX_POOLED_BYTES {
        return;
    }
    if !active() {
        return;
    }
    // During thread teardown the pool may be gone; the buffer is then simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        while !pool.is_empty() && pooled_bytes(&pool) + bytes > MAX_POOLED_BYTES {
            pool.remove(0);
        }
        pool.push(buffer);
    });
}

/// Empties this thread's pool, returning its memory to the allocator.
pub fn clear() {
    let _ = POOL.try_with(|pool| pool.borrow_mut().clear());
}

/// Bytes this thread's pool holds now.
pub fn held_bytes() -> usize {
    POOL.try_with(|pool| pooled_bytes(&pool.borrow()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_pool_reuses_large_buffers_within_its_bound() {
        clear();
        give_back(vec![1.0; MIN_POOLED_LEN]);
        assert_eq!(held_bytes(), 0, "no scope, no pooling");
        let scope = EvalScope::new();
        let mut a = overwritable(MIN_POOLED_LEN + 10);
        a[0] = 7.0;
        let ptr = a.as_ptr();
        give_back(a);
        assert_eq!(held_bytes(), (MIN_POOLED_LEN + 10) * 4);
        let b = overwritable(MIN_POOLED_LEN);
        assert_eq!((b.as_ptr(), b.len()), (ptr, MIN_POOLED_LEN), "reused");
        assert_eq!(held_bytes(), 0);
        give_back(b);
        let z = zeroed(MIN_POOLED_LEN + 5);
        assert_eq!(z.as_ptr(), ptr);
        assert!(z.iter().all(|&v| v == 0.0) && z.len() == MIN_POOLED_LEN + 5);
        give_back(vec![1.0; 100]);
        assert_eq!(held_bytes(), 0, "small buffers are freed");
        give_back(z);
        // A much smaller request does not take a big buffer.
        let small = overwritable(MIN_POOLED_LEN / 2 + 1);
        assert_ne!(small.as_ptr(), ptr);
        for _ in 0..(MAX_POOLED_BYTES / (MIN_POOLED_LEN * 4) + 3) {
            give_back(vec![0.0; MIN_POOLED_LEN]);
        }
        assert!(held_bytes() <= MAX_POOLED_BYTES);
        {
            let _inner = EvalScope::new();
        }
        assert!(active(), "an inner scope restores the outer state");
        drop(scope);
        assert!(!active());
        let held = held_bytes();
        let fresh = zeroed(MIN_POOLED_LEN);
        assert_eq!(held_bytes(), held, "outside a scope the pool is not used");
        give_back(fresh);
        assert_eq!(held_bytes(), held);
        clear();
        assert_eq!(held_bytes(), 0);
    }
}
