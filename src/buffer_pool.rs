//! A small pool of large `f32` buffers that dropped [`crate::Tensor`]s give back and new
//! activations take, so a training or inference loop stops handing its largest arrays back to
//! the operating system and faulting fresh zeroed pages in every step.
//!
//! Why: glibc serves multi-megabyte allocations with `mmap` (or trims them off the heap top)
//! under a threshold that adapts to the program's history. Depending on the order of sizes, a
//! step's activations were unmapped and faulted back in every iteration: with the fused
//! inference kernels, page faults and their lock contention took a quarter of a `mnist-cnn`
//! inference step at 2 threads (docs/perf.md). Reusing the steady-state buffers removes that
//! without depending on the allocator.
//!
//! Bounded: each thread keeps at most [`MAX_POOLED_BYTES`], oldest dropped first, so a model's
//! peak memory grows by at most that much. Only buffers of at least [`MIN_POOLED_LEN`] elements are pooled.

use std::cell::RefCell;

/// Buffers shorter than this (1 MiB of `f32`) go straight back to the allocator.
pub const MIN_POOLED_LEN: usize = 1 << 18;

/// The most the pool keeps, in bytes.
pub const MAX_POOLED_BYTES: usize = 32 << 20;

thread_local! {
    /// Per thread: layers allocate and drop activations on the thread that runs the model
    /// (rayon workers only run kernels on borrowed slices), so no lock is needed, and tests
    /// on different threads do not see each other's buffers.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

fn pooled_bytes(pool: &[Vec<f32>]) -> usize {
    pool.iter().map(|v| v.capacity() * 4).sum()
}

/// A vector of `len` zeros, reusing a pooled buffer whose capacity is within 25 % above `len`
/// when there is one.
pub fn zeroed(len: usize) -> Vec<f32> {
    filled(len, 0.0)
}

/// A vector of `len` copies of `value`, reusing a pooled buffer when one fits.
pub fn filled(len: usize, value: f32) -> Vec<f32> {
    if let Some(mut v) = take(len) {
        v.clear();
        v.resize(len, value);
        return v;
    }
    vec![value; len]
}

/// A vector of `len` elements whose values are unspecified (a pooled buffer's old contents,
/// or zeros): for outputs a kernel overwrites completely, saving the zero fill.
pub fn overwritable(len: usize) -> Vec<f32> {
    if let Some(mut v) = take(len) {
        v.resize(len, 0.0);
        v.truncate(len);
        return v;
    }
    vec![0.0; len]
}

fn take(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED_LEN {
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

/// Gives `buffer` to the pool (if it is large enough), dropping the oldest pooled buffers to
/// stay within [`MAX_POOLED_BYTES`].
pub fn give_back(buffer: Vec<f32>) {
    let bytes = buffer.capacity() * 4;
    if buffer.capacity() < MIN_POOLED_LEN || bytes > MAX_POOLED_BYTES {
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
    fn large_buffers_come_back_zeroed_small_ones_are_not_kept_and_the_pool_is_bounded() {
        clear();
        let mut a = zeroed(MIN_POOLED_LEN + 10);
        a.fill(7.0);
        let ptr = a.as_ptr();
        give_back(a);
        assert_eq!(held_bytes(), (MIN_POOLED_LEN + 10) * 4);
        let b = zeroed(MIN_POOLED_LEN);
        assert_eq!(b.as_ptr(), ptr, "the pooled buffer is reused");
        assert!(b.iter().all(|&v| v == 0.0));
        assert_eq!(held_bytes(), 0);
        give_back(vec![1.0; 100]);
        assert_eq!(held_bytes(), 0);
        // A much smaller request does not take a big buffer.
        give_back(b);
        let small = zeroed(MIN_POOLED_LEN / 2 + 1);
        assert_ne!(small.as_ptr(), ptr);
        for _ in 0..(MAX_POOLED_BYTES / (MIN_POOLED_LEN * 4) + 3) {
            give_back(vec![0.0; MIN_POOLED_LEN]);
        }
        assert!(held_bytes() <= MAX_POOLED_BYTES);
        assert_eq!(filled(MIN_POOLED_LEN, 2.5)[MIN_POOLED_LEN - 1], 2.5);
        clear();
        let mut c = overwritable(MIN_POOLED_LEN + 1);
        c[0] = 3.0;
        let ptr = c.as_ptr();
        give_back(c);
        let d = overwritable(MIN_POOLED_LEN);
        assert_eq!((d.as_ptr(), d.len()), (ptr, MIN_POOLED_LEN));
        clear();
        assert_eq!(held_bytes(), 0);
    }
}
