//! A small per-thread pool of large `f32` buffers: dropped [`crate::Tensor`]s give theirs back
//! and kernels take them again ([`zeroed`], [`overwritable`]), so a training or inference loop
//! stops handing its largest arrays to the operating system and faulting fresh zeroed pages
//! back in every step.
//!
//! Why: glibc serves multi-megabyte allocations with `mmap` (or trims them off the heap top)
//! under a threshold that adapts to the program's history. With the fused eval kernels
//! ([`crate::kernels::lif::forward_eval_planes`]) their outputs were unmapped and faulted back
//! in every step: page faults and their lock contention took a quarter of a `mnist-cnn`
//! inference step at 2 threads, and fused inference ran slower than unfused. The fused
//! training kernels ([`crate::kernels::lif::forward_train_planes`]) did the same to training:
//! `mnist-cnn` training 18 % slower than unfused until its buffers were pooled (docs/perf.md).
//!
//! The pool is active only inside a [`PoolScope`], which [`crate::nn::Network::forward`] and
//! [`crate::nn::Network::backward`] open: there layer outputs come from it and dropped tensors
//! go back to it, within the scope's limits. An eval scope keeps up to [`MAX_POOLED_BYTES`] per
//! thread and hands out the smallest pooled buffer that holds a request. (Taking only buffers
//! at most 25 % larger missed most reuses in ResNet-19 inference, whose activations come in
//! four sizes: 1.16 M page faults per 7 forwards, 757 MB peak RSS; best fit: 0.38 M and
//! 662 MB.)
//!
//! A training scope keeps up to [`TRAIN_MAX_POOLED_BYTES`] but must not raise a step's peak
//! memory, reached when the forward has saved everything the backward needs. So it is tight:
//! it hands out only a buffer at most twice the request, and on a miss first frees pooled
//! buffers that together hold at least the request. Pooled plus live memory then grows only
//! when the pool has nothing left to give, as it would without a pool. ResNet-19 training at
//! B = 64, T = 4, 2 threads (its activations and recomputed membrane tapes are 17–134 MB),
//! one `bench --iters 3 --warmup 1` run: system time 19.8 → 4.9 s, page faults 8.2 M → 1.5 M,
//! peak RSS 1,701 → 1,670 MB, +17–22 % images/s. (Best fit without the factor-2 bound:
//! 1,765 MB. Pooling only buffers up to 32 MB, as before, faulted the large activations in
//! afresh every step; hugepages via `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` cut the faults
//! 35× but not the system time, which is the kernel zeroing the pages.)
//! Reused buffers that must be zero are filled on all threads: a serial fill of a reused
//! 25 MB buffer once cost more than the page faults it saved.
//!
//! A tight miss of 32 MiB or more resizes a pooled buffer of that size instead of freeing it
//! (`realloc`, which glibc does by remapping pages, see `resize_on_miss`): the same memory
//! accounting, but the unmapping ran on the model's thread while the other cores waited, and
//! the pages were faulted back in. ResNet-19 training, `bench --warmup 1 --iters 3`, 2
//! threads: page faults 1.54 M → 1.20 M, system time 4.05 → 3.45 s, peak RSS unchanged.

use std::cell::{Cell, RefCell};

/// Buffers shorter than this (1 MiB of `f32`) go straight back to the allocator.
pub const MIN_POOLED_LEN: usize = 1 << 18;

/// The most a thread's pool keeps inside an eval scope, in bytes. ResNet-19 inference at
/// B = 64, T = 4 (largest activation 134 MB), best-fit pool: 512 MiB takes page faults from
/// 380 K to 216 K per 7 forwards against 256 MiB, at the same 661 MB peak RSS (the pool then
/// holds buffers the step's peak has already touched).
pub const MAX_POOLED_BYTES: usize = 512 << 20;

/// The most a thread's pool keeps inside a training scope, in bytes. ResNet-19 training at
/// B = 64, T = 4 fills it in a backward; 1.5 GiB saved a further fifth of the page faults but
/// left more unused at the step's peak (1,893 MB RSS, over a third of PyTorch's).
pub const TRAIN_MAX_POOLED_BYTES: usize = 1 << 30;

/// A tight scope hands out only a pooled buffer at most this many times the request.
const TIGHT_FIT_FACTOR: usize = 2;

/// What a scope lets the pool keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    /// Most pooled in all, bytes.
    total: usize,
    /// Tight (training): fit within [`TIGHT_FIT_FACTOR`], free on a miss (see the module docs).
    tight: bool,
}

const EVAL: Limits = Limits {
    total: MAX_POOLED_BYTES,
    tight: false,
};

const TRAIN: Limits = Limits {
    total: TRAIN_MAX_POOLED_BYTES,
    tight: true,
};

thread_local! {
    /// Per thread: layers allocate and drop activations on the thread that runs the model
    /// (rayon workers only run kernels on borrowed slices), so no lock is needed, and tests
    /// on different threads do not see each other's buffers.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static ARMED: Cell<Option<Limits>> = const { Cell::new(None) };
}

fn pooled_bytes(pool: &[Vec<f32>]) -> usize {
    pool.iter().map(|v| v.capacity() * 4).sum()
}

/// While alive, this thread's pool is active with the scope's limits (see the module docs);
/// scopes nest, the innermost one's limits apply.
#[must_use = "the pool is active only while the scope lives"]
pub struct PoolScope {
    previous: Option<Limits>,
}

impl PoolScope {
    /// An eval scope: buffers up to [`MAX_POOLED_BYTES`] in all.
    pub fn eval() -> Self {
        Self::enter(EVAL)
    }

    /// A training scope: up to [`TRAIN_MAX_POOLED_BYTES`], tight (see the module docs).
    pub fn training() -> Self {
        Self::enter(TRAIN)
    }

    fn enter(limits: Limits) -> Self {
        PoolScope {
            previous: ARMED.try_with(|a| a.replace(Some(limits))).unwrap_or(None),
        }
    }
}

impl Drop for PoolScope {
    fn drop(&mut self) {
        let _ = ARMED.try_with(|a| a.set(self.previous));
    }
}

fn limits() -> Option<Limits> {
    ARMED.try_with(Cell::get).unwrap_or(None)
}

/// A vector of `len` zeros: inside a [`PoolScope`], the smallest pooled buffer that holds
/// `len` (zero-filled on all threads); a fresh allocation if none does.
pub fn zeroed(len: usize) -> Vec<f32> {
    match take(len) {
        Some(mut v) => {
            v.truncate(len);
            crate::kernels::elementwise::par_fill_zero(&mut v);
            crate::kernels::elementwise::par_resize(&mut v, len);
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
            crate::kernels::elementwise::par_resize(&mut v, len);
            v
        }
        None => crate::kernels::elementwise::par_zeroed(len),
    }
}

fn take(len: usize) -> Option<Vec<f32>> {
    let limits = limits()?;
    if len < MIN_POOLED_LEN {
        return None;
    }
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let fits = |cap: usize| cap >= len && (!limits.tight || cap <= len * TIGHT_FIT_FACTOR);
        // Best fit among the buffers already `len` long (a shorter one must be zero-filled
        // up to `len` first), of equal fits the newest: its memory is the likeliest still in
        // cache.
        let best = pool
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, v)| fits(v.capacity()))
            .min_by_key(|(_, v)| (v.len() < len, v.capacity()))
            .map(|(at, _)| at);
        match best {
            Some(at) => Some(pool.remove(at)),
            None if limits.tight => resize_on_miss(&mut pool, len),
            None => None,
        }
    })
    .ok()
    .flatten()
}

/// A tight miss: the pooled memory must shrink by at least what the request adds. Where
/// `realloc` moves pages instead of copying them, a large pooled buffer is resized to the
/// request — the largest smaller one grows (its pages stay faulted in; the oldest others are
/// freed to make up the difference), else the smallest larger one gives up its tail — so a
/// ResNet-19 step stops unmapping its large activations on the model's thread while the
/// other cores wait, and faulting them back in. Elsewhere the oldest buffers are freed until
/// they held the request, and the caller allocates afresh.
fn resize_on_miss(pool: &mut Vec<Vec<f32>>, len: usize) -> Option<Vec<f32>> {
    let free_oldest = |pool: &mut Vec<Vec<f32>>, elements: usize| {
        let mut freed = 0;
        while freed < elements && !pool.is_empty() {
            freed += pool.remove(0).capacity();
        }
    };
    if RESIZES_IN_PLACE && len >= RESIZE_MIN_LEN {
        let pick = |smaller: bool| {
            let candidates = pool.iter().enumerate().filter(|(_, v)| {
                let cap = v.capacity();
                cap >= RESIZE_MIN_LEN && (cap < len) == smaller
            });
            if smaller {
                candidates
                    .max_by_key(|(_, v)| v.capacity())
                    .map(|(at, _)| at)
            } else {
                candidates
                    .min_by_key(|(_, v)| v.capacity())
                    .map(|(at, _)| at)
            }
        };
        if let Some(at) = pick(true) {
            let grown = pool.remove(at);
            free_oldest(pool, len - grown.capacity());
            return Some(grown);
        }
        if let Some(at) = pick(false) {
            let mut trimmed = pool.remove(at);
            trimmed.truncate(len);
            trimmed.shrink_to(len);
            return Some(trimmed);
        }
    }
    free_oldest(pool, len);
    None
}

/// Whether `realloc` of a [`RESIZE_MIN_LEN`]-or-larger buffer remaps its pages (glibc serves
/// such allocations with `mmap` and resizes them with `mremap`) rather than copying them.
const RESIZES_IN_PLACE: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Shortest buffer a tight miss resizes: glibc `mmap`s every allocation of 32 MiB and more,
/// whatever its adaptive threshold.
const RESIZE_MIN_LEN: usize = crate::kernels::elementwise::FRESH_PAGES_LEN;

/// Gives `buffer` to this thread's pool inside a [`PoolScope`] if it is large enough and
/// within the scope's limits, dropping the oldest pooled buffers to stay within them;
/// otherwise frees it.
pub fn give_back(buffer: Vec<f32>) {
    let bytes = buffer.capacity() * 4;
    let Some(limits) = limits() else {
        return;
    };
    if buffer.capacity() < MIN_POOLED_LEN || bytes > limits.total {
        return;
    }
    // During thread teardown the pool may be gone; the buffer is then simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        while !pool.is_empty() && pooled_bytes(&pool) + bytes > limits.total {
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
        let scope = PoolScope::eval();
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
        // Best fit: the smallest pooled buffer that holds the request.
        let big = vec![0.0; 3 * MIN_POOLED_LEN];
        let big_ptr = big.as_ptr();
        give_back(big);
        let fit = overwritable(MIN_POOLED_LEN);
        assert_eq!(fit.as_ptr(), ptr, "the smaller buffer fits");
        let larger = overwritable(2 * MIN_POOLED_LEN);
        assert_eq!(larger.as_ptr(), big_ptr, "only the big buffer holds it");
        assert_eq!(held_bytes(), 0);
        give_back(fit);
        give_back(larger);
        let small = overwritable(MIN_POOLED_LEN / 2 + 1);
        assert!(held_bytes() > 0 && small.as_ptr() != ptr, "not pooled");
        for _ in 0..(MAX_POOLED_BYTES / (MIN_POOLED_LEN * 4) + 3) {
            give_back(vec![0.0; MIN_POOLED_LEN]);
        }
        assert!(held_bytes() <= MAX_POOLED_BYTES);
        {
            let _inner = PoolScope::eval();
        }
        assert_eq!(
            limits(),
            Some(EVAL),
            "an inner scope restores the outer state"
        );
        drop(scope);
        assert_eq!(limits(), None);
        let held = held_bytes();
        let fresh = zeroed(MIN_POOLED_LEN);
        assert_eq!(held_bytes(), held, "outside a scope the pool is not used");
        give_back(fresh);
        assert_eq!(held_bytes(), held);
        clear();
        assert_eq!(held_bytes(), 0);
    }

    #[test]
    fn a_training_scope_fits_tightly_and_frees_on_a_miss() {
        clear();
        let n = MIN_POOLED_LEN;
        let train = PoolScope::training();
        give_back(vec![0.0; 3 * n]);
        let fresh = overwritable(n);
        assert_eq!(
            held_bytes(),
            0,
            "over twice the request: a miss, which frees the pooled buffer"
        );
        let mut twice = vec![3.0; 2 * n];
        let ptr = twice.as_ptr();
        give_back(std::mem::take(&mut twice));
        let z = zeroed(n);
        assert_eq!(z.as_ptr(), ptr, "twice the request still fits");
        assert!(z.iter().all(|&v| v == 0.0) && z.len() == n);
        drop(fresh);
        let (a, b, c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let c_ptr = c.as_ptr();
        for v in [a, b, c] {
            give_back(v);
        }
        let miss = overwritable(2 * n);
        assert_eq!(
            held_bytes(),
            n * 4,
            "a miss frees the oldest buffers until they hold the request"
        );
        let left = overwritable(n);
        assert_eq!(left.as_ptr(), c_ptr, "the newest buffer stays");
        drop((miss, z, left));
        for _ in 0..3 {
            give_back(vec![0.0; n]);
        }
        assert_eq!(
            held_bytes(),
            3 * n * 4,
            "a training scope pools what it gets"
        );
        drop(train);
        clear();
    }

    #[test]
    fn a_buffer_already_long_enough_is_taken_before_a_shorter_better_fit() {
        clear();
        let n = MIN_POOLED_LEN;
        let train = PoolScope::training();
        // Two buffers of the same capacity, one used last for a shorter tensor.
        let mut short = Vec::with_capacity(2 * n);
        short.resize(n, 1.0);
        let full = vec![2.0; 2 * n];
        let full_ptr = full.as_ptr();
        give_back(full);
        give_back(short);
        let got = overwritable(2 * n);
        assert_eq!(got.as_ptr(), full_ptr, "no zero fill needed");
        assert_eq!(got.len(), 2 * n);
        drop((got, train));
        clear();
    }

    #[test]
    fn a_tight_miss_resizes_a_large_pooled_buffer_in_place() {
        clear();
        let r = RESIZE_MIN_LEN;
        let train = PoolScope::training();
        give_back(vec![0.0; r / 2]);
        give_back(vec![3.0; r]);
        // Nothing holds 1.5·r: the r buffer grows (its contents stay), the older, smaller one
        // is freed to make up the difference.
        let grown = overwritable(r + r / 2);
        assert_eq!(grown.len(), r + r / 2);
        if RESIZES_IN_PLACE {
            assert_eq!((grown[0], grown[r - 1], grown[r]), (3.0, 3.0, 0.0));
        }
        assert_eq!(held_bytes(), 0);
        drop(grown);
        // Over twice the request: the buffer gives up its tail.
        give_back(vec![5.0; 3 * r]);
        let trimmed = zeroed(r + 1);
        assert!(trimmed.len() == r + 1 && trimmed.iter().all(|&v| v == 0.0));
        assert_eq!(held_bytes(), 0);
        if RESIZES_IN_PLACE {
            assert_eq!(trimmed.capacity(), trimmed.len());
        }
        // Below the resize length a miss frees and allocates afresh, as before.
        give_back(vec![0.0; MIN_POOLED_LEN]);
        let small = overwritable(3 * MIN_POOLED_LEN);
        assert!(small.capacity() >= 3 * MIN_POOLED_LEN);
        assert_eq!(held_bytes(), 0);
        drop(train);
        clear();
    }
}
