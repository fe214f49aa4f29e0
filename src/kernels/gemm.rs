//! Single-precision GEMM, `C ← α·A·B + β·C`, through `matrixmultiply::sgemm`.
//!
//! Matrices are views into slices described by a [`MatLayout`] (rows, columns and element
//! strides), so transposes and sub-blocks cost nothing. Every call here runs `matrixmultiply`
//! single-threaded (its `threading` feature is off): `matrixmultiply` splits skinny `M = 64`
//! shapes badly across threads (`../shared/ref/README.md`, 174 vs 148 GFLOP/s for 2 vs 1
//! threads), so parallelism comes from rayon over *independent* GEMMs instead — one per image of
//! a conv batch, or one per fixed block of rows ([`sgemm_rows_par`]). Blocks are fixed by the
//! shape alone, so results are bit-identical for every thread count.
//!
//! When `β == 0`, `C` is only written, never read (NaN in `C` does not leak into the result):
//! `matrixmultiply`'s contract, checked by this module's tests.

use rayon::prelude::*;

/// Where the elements of a `rows × cols` matrix sit in a slice: element `(i, j)` is at
/// `i·rs + j·cs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatLayout {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows, in elements.
    pub rs: usize,
    /// Distance between consecutive columns, in elements.
    pub cs: usize,
}

impl MatLayout {
    /// A dense row-major `rows × cols` matrix.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        MatLayout {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// A row-major `rows × cols` block whose rows are `rs` elements apart (a column block of a
    /// wider matrix).
    pub fn strided(rows: usize, cols: usize, rs: usize) -> Self {
        MatLayout {
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        MatLayout {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Minimum slice length holding every element (0 for an empty matrix).
    pub fn required_len(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }

    /// True if no two elements share an offset, for the two layout families `C` may use:
    /// rows of contiguous-ish columns (`cs ≥ 1`, `rs ≥ cols·cs`) or the transpose of that.
    fn is_non_aliasing(&self) -> bool {
        if self.rows <= 1 || self.cols <= 1 {
            return (self.rows <= 1 || self.rs > 0) && (self.cols <= 1 || self.cs > 0);
        }
        (self.cs >= 1 && self.rs >= self.cols * self.cs)
            || (self.rs >= 1 && self.cs >= self.rows * self.rs)
    }
}

/// `C ← α·A·B + β·C` for `A: m×k`, `B: k×n`, `C: m×n`, single-threaded.
///
/// `C` is not read when `beta == 0.0`.
///
/// # Panics
/// If the inner dimensions disagree, a slice is shorter than its layout needs, or `C`'s layout
/// would make two elements alias.
///
/// ```
/// use mpsnn::kernels::gemm::{sgemm, MatLayout};
/// let a = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let b = [1.0, 0.0, 1.0, 1.0]; // [[1, 0], [1, 1]]
/// let mut c = [f32::NAN; 4];
/// let l = MatLayout::row_major(2, 2);
/// sgemm(1.0, &a, l, &b, l, 0.0, &mut c, l);
/// assert_eq!(c, [3.0, 2.0, 7.0, 4.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    alpha: f32,
    a: &[f32],
    la: MatLayout,
    b: &[f32],
    lb: MatLayout,
    beta: f32,
    c: &mut [f32],
    lc: MatLayout,
) {
    assert!(
        la.cols == lb.rows && la.rows == lc.rows && lb.cols == lc.cols,
        "sgemm: dimensions {}x{} · {}x{} -> {}x{}",
        la.rows,
        la.cols,
        lb.rows,
        lb.cols,
        lc.rows,
        lc.cols
    );
    assert!(a.len() >= la.required_len(), "sgemm: A slice too short");
    assert!(b.len() >= lb.required_len(), "sgemm: B slice too short");
    assert!(c.len() >= lc.required_len(), "sgemm: C slice too short");
    assert!(lc.is_non_aliasing(), "sgemm: C layout aliases: {lc:?}");
    // SAFETY: the asserts above are exactly `sgemm_unchecked`'s preconditions.
    unsafe { sgemm_unchecked(alpha, a, la, b, lb, beta, c, lc) }
}

/// [`sgemm`] without the checks.
///
/// # Safety
/// `la.cols == lb.rows`, `la.rows == lc.rows`, `lb.cols == lc.cols`; each slice is at least
/// its layout's [`MatLayout::required_len`]; `lc` does not alias (no two `(i, j)` map to the
/// same offset). Then every pointer `matrixmultiply` forms stays inside the slices, and `C` is
/// written through a unique borrow.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_unchecked(
    alpha: f32,
    a: &[f32],
    la: MatLayout,
    b: &[f32],
    lb: MatLayout,
    beta: f32,
    c: &mut [f32],
    lc: MatLayout,
) {
    debug_assert!(la.cols == lb.rows && la.rows == lc.rows && lb.cols == lc.cols);
    debug_assert!(a.len() >= la.required_len() && b.len() >= lb.required_len());
    debug_assert!(c.len() >= lc.required_len() && lc.is_non_aliasing());
    let s = |x: usize| x as isize;
    // SAFETY: by this function's contract the views fit in the slices and C does not alias;
    // slice lengths fit in isize, so the stride casts do not wrap.
    unsafe {
        matrixmultiply::sgemm(
            lc.rows,
            la.cols,
            lc.cols,
            alpha,
            a.as_ptr(),
            s(la.rs),
            s(la.cs),
            b.as_ptr(),
            s(lb.rs),
            s(lb.cs),
            beta,
            c.as_mut_ptr(),
            s(lc.rs),
            s(lc.cs),
        )
    }
}

/// Rows of `C` per parallel task in [`sgemm_rows_par`]: `matrixmultiply`'s own `MC` block, so a
/// task is never smaller than the unit the kernel packs anyway.
pub const ROW_BLOCK: usize = 64;

/// [`sgemm`] with the rows of `C` (and `A`) split into fixed blocks of [`ROW_BLOCK`] rows, one
/// single-threaded GEMM per block on the rayon pool.
///
/// `C` must be row-major with row stride `lc.rs ≥ lc.cols` (`lc.cs == 1`). The blocks depend
/// only on `m`, so the result is the same for every thread count.
///
/// # Panics
/// As [`sgemm`], and if `lc.cs != 1`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_rows_par(
    alpha: f32,
    a: &[f32],
    la: MatLayout,
    b: &[f32],
    lb: MatLayout,
    beta: f32,
    c: &mut [f32],
    lc: MatLayout,
) {
    assert_eq!(lc.cs, 1, "sgemm_rows_par: C must be row-major");
    let m = lc.rows;
    if m <= ROW_BLOCK {
        return sgemm(alpha, a, la, b, lb, beta, c, lc);
    }
    assert!(
        c.len() >= lc.required_len(),
        "sgemm_rows_par: C slice too short"
    );
    assert_eq!(la.rows, m, "sgemm_rows_par: A rows");
    let c = &mut c[..lc.required_len()];
    c.par_chunks_mut(ROW_BLOCK * lc.rs)
        .enumerate()
        .for_each(|(blk, cb)| {
            let r0 = blk * ROW_BLOCK;
            let rows = ROW_BLOCK.min(m - r0);
            let la_b = MatLayout { rows, ..la };
            let lc_b = MatLayout { rows, ..lc };
            let a_off = r0 * la.rs;
            sgemm(alpha, &a[a_off.min(a.len())..], la_b, b, lb, beta, cb, lc_b);
        });
}

/// `batch` independent GEMMs `C_i ← α·A_i·B_i + β·C_i` on the rayon pool, each
/// single-threaded; `A_i` starts at `i·a_step` in `a` (use `a_step = 0` to share one `A`),
/// likewise for `B` and `C`. `C_i` blocks must not overlap: `c_step ≥ lc.required_len()`.
///
/// Each `C_i` is computed by the same single-threaded code whatever the pool size, so the
/// result is bit-identical for every thread count.
///
/// # Panics
/// As [`sgemm`] for every item, and if the `C_i` would overlap.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_batched(
    batch: usize,
    alpha: f32,
    a: &[f32],
    la: MatLayout,
    a_step: usize,
    b: &[f32],
    lb: MatLayout,
    b_step: usize,
    beta: f32,
    c: &mut [f32],
    lc: MatLayout,
    c_step: usize,
) {
    if batch == 0 || lc.required_len() == 0 {
        return;
    }
    assert!(
        c_step >= lc.required_len(),
        "sgemm_batched: C blocks overlap"
    );
    assert!(
        c.len() >= (batch - 1) * c_step + lc.required_len(),
        "sgemm_batched: C slice too short"
    );
    c.par_chunks_mut(c_step)
        .take(batch)
        .enumerate()
        .for_each(|(i, ci)| {
            let a_i = &a[(i * a_step).min(a.len())..];
            let b_i = &b[(i * b_step).min(b.len())..];
            sgemm(alpha, a_i, la, b_i, lb, beta, ci, lc);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n).map(|_| lcg(seed)).collect()
    }

    fn at(x: &[f32], l: MatLayout, i: usize, j: usize) -> f64 {
        x[i * l.rs + j * l.cs] as f64
    }

    /// Naive f64 reference for `α·A·B + β·C` (β = 0 ignores C).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        alpha: f32,
        a: &[f32],
        la: MatLayout,
        b: &[f32],
        lb: MatLayout,
        beta: f32,
        c: &[f32],
        lc: MatLayout,
    ) -> Vec<f64> {
        let mut out = vec![0.0; lc.rows * lc.cols];
        for i in 0..lc.rows {
            for j in 0..lc.cols {
                let mut s = 0.0;
                for p in 0..la.cols {
                    s += at(a, la, i, p) * at(b, lb, p, j);
                }
                let prev = if beta == 0.0 { 0.0 } else { at(c, lc, i, j) };
                out[i * lc.cols + j] = alpha as f64 * s + beta as f64 * prev;
            }
        }
        out
    }

    fn check_close(got: &[f32], lc: MatLayout, want: &[f64], k: usize) {
        for i in 0..lc.rows {
            for j in 0..lc.cols {
                let g = got[i * lc.rs + j * lc.cs] as f64;
                let w = want[i * lc.cols + j];
                // Each product of two |x| ≤ 1 values rounds once, the f32 sum of k terms
                // accumulates at most ~k·2⁻²⁴ relative error.
                assert!(
                    (g - w).abs() <= 1e-6 * (k as f64 + 1.0) * (1.0 + w.abs()),
                    "({i},{j}): {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn matches_reference_on_awkward_shapes_and_strides() {
        let mut seed = 7;
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 9, 33),
            (65, 127, 5),
            (0, 3, 4),
            (4, 0, 3),
        ] {
            for trans_a in [false, true] {
                for trans_b in [false, true] {
                    let la = if trans_a {
                        MatLayout::row_major(k, m).t()
                    } else {
                        MatLayout::row_major(m, k)
                    };
                    let lb = if trans_b {
                        MatLayout::row_major(n, k).t()
                    } else {
                        MatLayout::row_major(k, n)
                    };
                    let a = rand_vec(m * k, &mut seed);
                    let b = rand_vec(k * n, &mut seed);
                    // C is a column block inside a wider matrix: the padding columns must
                    // survive untouched.
                    let lc = MatLayout::strided(m, n, n + 3);
                    for beta in [0.0, 0.5] {
                        let mut c = if beta == 0.0 {
                            vec![f32::NAN; lc.required_len() + 3]
                        } else {
                            rand_vec(lc.required_len() + 3, &mut seed)
                        };
                        let before = c.clone();
                        let want = reference(1.5, &a, la, &b, lb, beta, &c, lc);
                        sgemm(1.5, &a, la, &b, lb, beta, &mut c, lc);
                        check_close(&c, lc, &want, k);
                        for i in 0..m {
                            for j in n..n + 3 {
                                let idx = i * (n + 3) + j;
                                if idx < c.len() {
                                    assert!(c[idx].to_bits() == before[idx].to_bits());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rows_par_and_batched_are_thread_count_independent() {
        let mut seed = 11;
        let (m, k, n) = (200, 37, 29);
        let a = rand_vec(m * k, &mut seed);
        let b = rand_vec(k * n, &mut seed);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut c = vec![f32::NAN; m * n];
                let (la, lb, lc) = (
                    MatLayout::row_major(m, k),
                    MatLayout::row_major(k, n),
                    MatLayout::row_major(m, n),
                );
                sgemm_rows_par(1.0, &a, la, &b, lb, 0.0, &mut c, lc);
                let mut cb = vec![f32::NAN; 4 * 10 * n];
                let lcb = MatLayout::row_major(10, n);
                sgemm_batched(
                    4,
                    1.0,
                    &a,
                    MatLayout::row_major(10, k),
                    10 * k,
                    &b,
                    lb,
                    0,
                    0.0,
                    &mut cb,
                    lcb,
                    10 * n,
                );
                (c, cb)
            })
        };
        let (c1, cb1) = run(1);
        let (c4, cb4) = run(4);
        assert!(c1.iter().zip(&c4).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(cb1
            .iter()
            .zip(&cb4)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        let la = MatLayout::row_major(m, k);
        let lb = MatLayout::row_major(k, n);
        let lc = MatLayout::row_major(m, n);
        check_close(&c1, lc, &reference(1.0, &a, la, &b, lb, 0.0, &c1, lc), k);
        // Batch item i is rows 10·i.. of the big product.
        for i in 0..4 {
            for j in 0..10 * n {
                assert_eq!(cb1[i * 10 * n + j].to_bits(), c1[i * 10 * n + j].to_bits());
            }
        }
    }

    #[test]
    #[should_panic(expected = "aliases")]
    fn aliasing_c_is_rejected() {
        let mut c = vec![0.0; 4];
        let lc = MatLayout {
            rows: 2,
            cols: 2,
            rs: 1,
            cs: 1,
        };
        sgemm(
            1.0,
            &[1.0; 4],
            MatLayout::row_major(2, 2),
            &[1.0; 4],
            MatLayout::row_major(2, 2),
            0.0,
            &mut c,
            lc,
        );
    }
}
