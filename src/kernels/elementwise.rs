//! Element-wise vector operations (`wide` lanes with scalar tails).

use rayon::prelude::*;
use wide::f32x8;

const LANES: usize = 8;

/// Elements per task of the `par_` operations: fixed, so results never depend on the thread
/// count, and large enough (256 KB) that task overhead is negligible.
pub const PAR_CHUNK: usize = 64 * 1024;

/// `dst[i] += src[i]`.
///
/// # Panics
/// If the lengths differ.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add_assign: length mismatch");
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = f32x8::new(dc.try_into().unwrap()) + f32x8::new(sc.try_into().unwrap());
        dc.copy_from_slice(&v.to_array());
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x += *y;
    }
}

/// `dst[i] *= factor`.
pub fn scale(dst: &mut [f32], factor: f32) {
    let f = f32x8::splat(factor);
    let mut d = dst.chunks_exact_mut(LANES);
    for dc in &mut d {
        let v = f32x8::new(dc.try_into().unwrap()) * f;
        dc.copy_from_slice(&v.to_array());
    }
    for x in d.into_remainder() {
        *x *= factor;
    }
}

/// `Σ x[i]` in eight f32 lanes (each lane sums every eighth element), lanes then tail added in
/// a fixed order. For long rows callers split into blocks and accumulate the block sums in f64.
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = f32x8::splat(0.0);
    let mut c = x.chunks_exact(LANES);
    for xc in &mut c {
        acc += f32x8::new(xc.try_into().unwrap());
    }
    let mut s = acc.reduce_add();
    for v in c.remainder() {
        s += *v;
    }
    s
}

/// `dst[i] += a · src[i]`.
///
/// # Panics
/// If the lengths differ.
pub fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "axpy: length mismatch");
    let av = f32x8::splat(a);
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = f32x8::new(sc.try_into().unwrap()).mul_add(av, f32x8::new(dc.try_into().unwrap()));
        dc.copy_from_slice(&v.to_array());
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x = y.mul_add(a, *x);
    }
}

/// `dst[i] = src[i] · a + b` (an affine map, e.g. batch-norm with folded statistics).
///
/// # Panics
/// If the lengths differ.
pub fn affine(dst: &mut [f32], src: &[f32], a: f32, b: f32) {
    assert_eq!(dst.len(), src.len(), "affine: length mismatch");
    let (av, bv) = (f32x8::splat(a), f32x8::splat(b));
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = f32x8::new(sc.try_into().unwrap()).mul_add(av, bv);
        dc.copy_from_slice(&v.to_array());
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x = y.mul_add(a, b);
    }
}

/// `x[i] = x[i] · a + b` in place.
pub fn affine_inplace(x: &mut [f32], a: f32, b: f32) {
    let (av, bv) = (f32x8::splat(a), f32x8::splat(b));
    let mut d = x.chunks_exact_mut(LANES);
    for dc in &mut d {
        let v = f32x8::new((&*dc).try_into().unwrap()).mul_add(av, bv);
        dc.copy_from_slice(&v.to_array());
    }
    for v in d.into_remainder() {
        *v = v.mul_add(a, b);
    }
}

/// Elements from which `vec![0.0; len]` costs no fill: glibc serves allocations of 32 MiB and
/// more (its largest mmap threshold) with fresh pages that the kernel zeroes lazily, in
/// whichever thread first touches them. Filling them again measured 5 % slower on ResNet-19
/// training.
pub const FRESH_PAGES_LEN: usize = (32 << 20) / 4;

/// A vector of `len` zeros written by all threads. `vec![0.0; len]` zero-fills on the calling
/// thread when the allocator reuses memory: in a 2-thread mnist-cnn training step that serial
/// fill was two thirds of the main thread's own work while the other core idled.
pub fn par_zeroed(len: usize) -> Vec<f32> {
    if !(PAR_CHUNK..FRESH_PAGES_LEN).contains(&len) {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(PAR_CHUNK)
        .for_each(|c| {
            for x in c {
                x.write(0.0);
            }
        });
    // SAFETY: the capacity is at least `len` and the loop above initialized elements
    // `0..len` (every chunk of the first `len` spare slots was written).
    unsafe { v.set_len(len) };
    v
}

/// True if no element is NaN or infinite, checked over rayon tasks (a ResNet-19 step checks
/// 13 M gradients).
pub fn par_all_finite(src: &[f32]) -> bool {
    src.par_chunks(PAR_CHUNK)
        .all(|c| c.iter().all(|v| v.is_finite()))
}

/// Resizes `v` to `len` elements, the new ones 0 and written by all threads (so their pages
/// fault in on every core); growing reallocates, which for an `mmap`ed buffer moves its pages
/// instead of copying them (`mremap`).
pub fn par_resize(v: &mut Vec<f32>, len: usize) {
    let old = v.len();
    if len <= old {
        v.truncate(len);
        return;
    }
    v.reserve_exact(len - old);
    v.spare_capacity_mut()[..len - old]
        .par_chunks_mut(PAR_CHUNK)
        .for_each(|c| {
            for x in c {
                x.write(0.0);
            }
        });
    // SAFETY: `reserve_exact` made the capacity at least `len`, and the loop above
    // initialized the `len − old` slots after the first `old` elements.
    unsafe { v.set_len(len) };
}

/// `dst ← 0` over rayon tasks (serially below one task's length).
pub fn par_fill_zero(dst: &mut [f32]) {
    if dst.len() < PAR_CHUNK {
        dst.fill(0.0);
        return;
    }
    dst.par_chunks_mut(PAR_CHUNK).for_each(|c| c.fill(0.0));
}

/// [`add_assign`] over rayon tasks: the same per-element operation, so the same bits. For the
/// multi-megabyte activations of residual adds and gradient sums, which a single thread would
/// stream alone while the other cores idle.
///
/// # Panics
/// If the lengths differ.
pub fn par_add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "par_add_assign: length mismatch");
    dst.par_chunks_mut(PAR_CHUNK)
        .zip(src.par_chunks(PAR_CHUNK))
        .for_each(|(d, s)| add_assign(d, s));
}

/// `dst ← src` over rayon tasks.
///
/// # Panics
/// If the lengths differ.
pub fn par_copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "par_copy: length mismatch");
    dst.par_chunks_mut(PAR_CHUNK)
        .zip(src.par_chunks(PAR_CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// `dst` = `src` repeated `dst.len() / src.len()` times, over rayon tasks.
///
/// # Panics
/// If `src` is empty or its length does not divide `dst.len()`.
pub fn par_tile(dst: &mut [f32], src: &[f32]) {
    assert!(
        !src.is_empty() && dst.len().is_multiple_of(src.len()),
        "par_tile: {} is not a multiple of {}",
        dst.len(),
        src.len()
    );
    for tile in dst.chunks_exact_mut(src.len()) {
        par_copy(tile, src);
    }
}

/// `dst[i] = Σ_k src[k·n + i]` with `n = dst.len()`, added in `k` order (the same bits as
/// copying tile 0 and [`add_assign`]-ing the others), over rayon tasks.
///
/// # Panics
/// If `dst` is empty or its length does not divide `src.len()`.
pub fn par_sum_tiles(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert!(
        n > 0 && src.len().is_multiple_of(n) && src.len() >= n,
        "par_sum_tiles: {} is not a multiple of {n}",
        src.len()
    );
    dst.par_chunks_mut(PAR_CHUNK)
        .enumerate()
        .for_each(|(c, d)| {
            let lo = c * PAR_CHUNK;
            d.copy_from_slice(&src[lo..lo + d.len()]);
            for tile in src.chunks_exact(n).skip(1) {
                add_assign(d, &tile[lo..lo + d.len()]);
            }
        });
}

/// Asks the CPU to bring `data` toward its L2 cache (a hint: no effect on results). For
/// data a kernel reads only after other work, in runs too short for the hardware
/// prefetchers to pick up: issued first, the loads overlap that work.
pub fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing architecturally and cannot
        // fault, and the address is inside `data` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Asks the CPU to bring the cache line holding `data[at]` into L1, if `at` is inside `data`
/// (a hint: no effect on results). For a loop streaming several rows at once, a few lines
/// ahead of its loads.
#[inline(always)]
pub fn prefetch_line(data: &[f32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = data.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing architecturally and cannot
        // fault, and the address is inside `data` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const f32).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint takes any slice (empty, shorter than a line, unaligned, a tail) and changes
    /// nothing.
    #[test]
    fn prefetch_takes_any_slice_and_changes_nothing() {
        let data: Vec<f32> = (0..100).map(|i| i as f32).collect();
        for (start, len) in [(0, 0), (0, 1), (3, 16), (1, 37), (0, 100), (99, 1)] {
            prefetch(&data[start..start + len]);
        }
        // Any index, inside the slice or past its end.
        for at in [0, 15, 16, 99, 100, 1 << 40] {
            prefetch_line(&data, at);
            prefetch_line(&data[..0], at);
        }
        assert!(data.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[test]
    fn add_and_scale_match_scalar_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 17, 127] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 3.0 - i as f32).collect();
            let mut c = a.clone();
            add_assign(&mut c, &b);
            scale(&mut c, -2.0);
            for i in 0..n {
                assert_eq!(c[i], (a[i] + b[i]) * -2.0);
            }
        }
    }

    #[test]
    fn parallel_operations_match_the_serial_ones_bit_for_bit() {
        // Lengths around the task size, so tasks and tails both occur.
        for n in [1, 9, PAR_CHUNK - 3, PAR_CHUNK + 5, 3 * PAR_CHUNK + 7] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 1e-3).collect();
            let mut serial = a.clone();
            add_assign(&mut serial, &b);
            let mut par = a.clone();
            par_add_assign(&mut par, &b);
            assert_eq!(par, serial);
            let mut copy = par_zeroed(n);
            assert!(copy.len() == n && copy.iter().all(|&v| v == 0.0));
            par_copy(&mut copy, &a);
            assert_eq!(copy, a);

            let t = 3;
            let mut tiled = vec![f32::NAN; t * n];
            par_tile(&mut tiled, &a);
            assert!(tiled.chunks(n).all(|c| c == a));
            let mut stacked = a.clone();
            stacked.extend_from_slice(&b);
            stacked.extend_from_slice(&a);
            let mut want = a.clone();
            add_assign(&mut want, &b);
            add_assign(&mut want, &a);
            let mut got = vec![f32::NAN; n];
            par_sum_tiles(&mut got, &stacked);
            assert_eq!(got, want);

            // Growing keeps the old elements and zeroes the new ones; shrinking truncates.
            let mut grown = a.clone();
            par_resize(&mut grown, 2 * n + PAR_CHUNK + 1);
            assert_eq!(grown[..n], a[..]);
            assert!(grown.len() == 2 * n + PAR_CHUNK + 1 && grown[n..].iter().all(|&v| v == 0.0));
            par_resize(&mut grown, n / 2);
            assert_eq!(grown[..], a[..n / 2]);

            assert!(par_all_finite(&a));
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = a.clone();
                x[n - 1] = bad;
                assert!(!par_all_finite(&x), "{bad} at the end of {n}");
            }
        }
    }

    #[test]
    fn sum_axpy_affine_match_scalar_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 17, 127] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().map(|&v| v as f64).sum();
            assert!((sum(&a) as f64 - want).abs() < 1e-5, "sum n={n}");

            let mut d = b.clone();
            axpy(&mut d, 0.5, &a);
            let mut e = vec![f32::NAN; n];
            affine(&mut e, &a, 0.5, 0.25);
            let mut f = a.clone();
            affine_inplace(&mut f, 0.5, 0.25);
            for i in 0..n {
                assert!((d[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
                assert!((e[i] - (a[i] * 0.5 + 0.25)).abs() < 1e-6);
                assert_eq!(e[i].to_bits(), f[i].to_bits());
            }
        }
    }
}
