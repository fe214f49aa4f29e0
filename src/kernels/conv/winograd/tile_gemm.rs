//! The Winograd input gradient's (and forward's) `(m + 2)²` products `M_ξ = Ŵ_ξ·V_ξ`
//! without packing, for small channel counts.
//!
//! `Ŵ_ξ` is `C_in × C_out` with its columns contiguous ([`super::transform_weight`]), `V_ξ`
//! `C_out × tiles` with its rows contiguous: exactly what a broadcast kernel reads, a weight
//! scalar times a 16-tile vector. So the kernel keeps an 8-row × 48-column block of `M` in 24
//! registers and streams `K = C_out` rows of `V` through it, straight from the transform's
//! output. `matrixmultiply` instead copies both operands into panels on every call; with
//! `K` = 32–64 and 16–256 tile columns that packing was ≈ 10 % of a `mnist-cnn` training step
//! (`perf`), as much as a third of its micro-kernel time.
//!
//! Numerics: every element is one FMA chain over `k` in order, so the result differs from the
//! GEMM's in rounding only (the Winograd tests bound it).

/// Rows of `M` per register block (the multiple of `C_in` this kernel takes).
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 8;
/// Columns of `M` per register block: the tile-column group that fills it
/// ([`super::transformed_conv`] sizes its groups by this).
pub(super) const BLOCK_COLS: usize = 48;
/// Longest `K` taken. Measured with criterion `conv2d/dx` against `matrixmultiply`: −19 % (1
/// thread) and −21 % (2 threads) at `K` = 64 (`mnist-cnn`'s conv2), but +2 to +7 % at `K` = 128
/// (128 channels at 14×14 and 32×32), where packing is a smaller share and the GEMM's cache
/// blocking pays.
#[cfg(target_arch = "x86_64")]
const MAX_K: usize = 64;

/// True if [`gemm`] takes an `m`-row product over `k` on this CPU: AVX-512F, `m` a multiple
/// of 8, `k ≤ 64`.
pub(super) fn applies(m: usize, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        m.is_multiple_of(ROWS)
            && (1..=MAX_K).contains(&k)
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, k);
        false
    }
}

/// `c[r·ldc + t] = Σ_κ a[κ·lda + r] · b[κ·ldb + t]` for `r < m`, `t < n`, `κ < k`.
///
/// # Panics
/// If [`applies`] is false for `(m, k)`, or a slice is too short for its layout.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(applies(m, k), "tile_gemm: {m} rows over {k} not taken here");
    if n == 0 {
        return;
    }
    assert!(
        lda >= m
            && ldb >= n
            && ldc >= n
            && a.len() >= (k - 1) * lda + m
            && b.len() >= (k - 1) * ldb + n
            && c.len() >= (m - 1) * ldc + n,
        "tile_gemm: slices too short"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` checked AVX-512F and `m % 8 == 0`; the asserts above bound every
    // index the kernel forms (rows r < m, columns t < n, κ < k).
    unsafe {
        avx512::gemm(
            (m, k, n),
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            c.as_mut_ptr(),
            ldc,
        )
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK_COLS, ROWS};
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps,
        _mm512_setzero_ps,
    };

    /// Column vectors per register block.
    const VECS: usize = BLOCK_COLS / 16;

    /// See [`super::gemm`].
    ///
    /// # Safety
    /// AVX-512F; `m % ROWS == 0`, `k ≥ 1`, and `a`, `b`, `c` valid for the indices of
    /// [`super::gemm`]'s formula.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        (m, k, n): (usize, usize, usize),
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut t0 = 0;
        while t0 < n {
            let cols = (n - t0).min(16 * VECS);
            let vecs = cols.div_ceil(16);
            let last = (((1u32 << (cols - 16 * (vecs - 1))) - 1) & 0xffff) as u16;
            let last = if last == 0 { 0xffff } else { last };
            let masks: [u16; VECS] = std::array::from_fn(|v| {
                if v + 1 < vecs {
                    0xffff
                } else if v + 1 == vecs {
                    last
                } else {
                    0
                }
            });
            for r0 in (0..m).step_by(ROWS) {
                // SAFETY: rows r0..r0 + 8 ≤ m, columns t0..t0 + cols ≤ n (masked lanes are
                // neither read nor written), κ < k: inside the caller's bounds.
                unsafe {
                    let (ar, br, cr) = (a.add(r0), b.add(t0), c.add(r0 * ldc + t0));
                    match vecs {
                        3 => block::<3>(k, ar, lda, br, ldb, cr, ldc, masks),
                        2 => block::<2>(k, ar, lda, br, ldb, cr, ldc, masks),
                        _ => block::<1>(k, ar, lda, br, ldb, cr, ldc, masks),
                    }
                }
            }
            t0 += cols;
        }
    }

    /// One 8-row × `NV`-vector block of `c`, its lanes chosen by `masks`.
    ///
    /// # Safety
    /// As [`gemm`], for rows `0..8` and the masked columns.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const NV: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        masks: [u16; VECS],
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; ROWS];
        for kk in 0..k {
            // SAFETY: row κ of `b` at the masked columns, `a[κ·lda + 0..8]`.
            unsafe {
                let bk = b.add(kk * ldb);
                let bv: [__m512; NV] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], bk.add(16 * v)));
                let ak = a.add(kk * lda);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ak.add(r));
                    for (x, &bx) in row.iter_mut().zip(&bv) {
                        *x = _mm512_fmadd_ps(av, bx, *x);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                // SAFETY: row r of `c` at the masked columns.
                unsafe { _mm512_mask_storeu_ps(c.add(r * ldc + 16 * v), masks[v], x) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_gemm_matches_a_plain_product_and_writes_only_its_block() {
        if !applies(8, 1) {
            eprintln!("no AVX-512F: tile_gemm not tested");
            return;
        }
        let mut seed = 11;
        let mut data = |n: usize| super::super::super::tests::rand_vec(n, &mut seed);
        // Column tails of 1, 15, 16, 17 and 47 lanes, one to four row blocks, K from 1 to 64,
        // leading dimensions past the block.
        for &(m, k, n) in &[
            (8, 1, 1),
            (16, 64, 47),
            (24, 33, 100),
            (8, 64, 48),
            (32, 5, 17),
        ] {
            let (lda, ldb, ldc) = (m + 3, n + 5, n + 2);
            let a = data((k - 1) * lda + m);
            let b = data((k - 1) * ldb + n);
            let mut c = vec![f32::NAN; m * ldc];
            gemm((m, k, n), &a, lda, &b, ldb, &mut c, ldc);
            for r in 0..m {
                for t in 0..ldc {
                    let got = c[r * ldc + t];
                    if t >= n {
                        assert!(got.is_nan(), "({m},{k},{n}) wrote c[{r}][{t}]");
                        continue;
                    }
                    let (mut want, mut mag) = (0.0f64, 0.0f64);
                    for kk in 0..k {
                        let p = a[kk * lda + r] as f64 * b[kk * ldb + t] as f64;
                        want += p;
                        mag += p.abs();
                    }
                    let tol = 1e-5 * mag + 1e-6;
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "({m},{k},{n}) c[{r}][{t}] = {got}, want {want}"
                    );
                }
            }
        }
        assert!(!applies(12, 64) && !applies(8, 65) && !applies(8, 0));
    }
}
