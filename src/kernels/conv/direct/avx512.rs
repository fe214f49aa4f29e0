//! The AVX-512F register kernels of [`super`]: one image row is one 16-lane vector of a
//! zero-padded plane (`ROW` floats a row), so a tap's shift along x is a load at offset `kx`.

use super::{CO_BLOCK, ROW, ROWS_BLOCK};
use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_expandloadu_ps,
    _mm512_maskz_mov_ps, _mm512_set1_ps, _mm512_setzero_ps,
};

/// The first `n ≤ 16` lanes.
fn lanes(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

/// `R` output rows `y0..y0 + R` of [`CO_BLOCK`] output channels of one image:
/// `acc[j][i] = init[j] + Σ_{ci, ky, kx} wk[ci][kx][ky][j] · xp[ci][y0 + i + ky][kx..kx + 16]`.
///
/// The `R + 2` input rows of a `(ci, kx)` step are loaded once into registers and each of its
/// 12 weights is broadcast once for the `R` FMAs that use it: `4·R` accumulators, `R + 2`
/// rows and a broadcast, 28 of the 32 registers at `R` = 5. (With 7 rows the compiler kept
/// the 12 broadcasts in registers too and spilled the accumulators: 40 % slower.)
///
/// # Safety
/// AVX-512F; `xp` is readable for `c_in` planes of `plane` floats from row `y0` to row
/// `y0 + R + 1` plus 16 floats, `wk` for `c_in · 36` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn rows_block<const R: usize>(
    xp: *const f32,
    plane: usize,
    c_in: usize,
    y0: usize,
    wk: *const f32,
    init: [__m512; CO_BLOCK],
) -> [[__m512; R]; CO_BLOCK] {
    let mut acc = [[_mm512_setzero_ps(); R]; CO_BLOCK];
    for (row, &v) in acc.iter_mut().zip(&init) {
        *row = [v; R];
    }
    for ci in 0..c_in {
        // SAFETY: the caller's bounds: rows y0..y0 + R + 2 of plane ci, weights ci·36..+36.
        unsafe {
            let base = xp.add(ci * plane + y0 * ROW);
            let wc = wk.add(ci * 36);
            for kx in 0..3 {
                let wkx = wc.add(kx * 12);
                let v: [__m512; 8] = std::array::from_fn(|r| {
                    if r < R + 2 {
                        _mm512_loadu_ps(base.add(r * ROW + kx))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for ky in 0..3 {
                    for (j, row) in acc.iter_mut().enumerate() {
                        let wv = _mm512_set1_ps(*wkx.add(ky * CO_BLOCK + j));
                        for (i, a) in row.iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(wv, v[i + ky], *a);
                        }
                    }
                }
            }
        }
    }
    acc
}

/// One image of [`super::conv_image`]: every block of [`CO_BLOCK`] output channels and up to
/// [`ROWS_BLOCK`] rows, stored to `y` (`[C_out, H, W]`, rows of `w` floats).
///
/// # Safety
/// AVX-512F; `xp` holds `c_in` padded planes of `(h + 2)·ROW` floats plus [`ROW`] floats of
/// slack, `wk` `c_out / CO_BLOCK` blocks of `c_in · 36` floats, `bias` (if any) `c_out`
/// floats, `y` `c_out·h·w` floats; `c_out` is a multiple of [`CO_BLOCK`], `w ≤ ROW − 2`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv_image(
    xp: &[f32],
    (c_in, h, w): (usize, usize, usize),
    wk: &[f32],
    c_out: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let plane = (h + 2) * ROW;
    const { assert!(ROWS_BLOCK + 2 <= 8, "rows_block loads at most 8 rows") };
    assert!(
        xp.len() > c_in * plane
            && wk.len() >= c_out * c_in * 9
            && y.len() >= c_out * h * w
            && c_out.is_multiple_of(CO_BLOCK)
            && w + 2 <= ROW
            && bias.is_none_or(|b| b.len() >= c_out)
    );
    let mask = lanes(w);
    for cb in 0..c_out / CO_BLOCK {
        let init: [__m512; CO_BLOCK] = std::array::from_fn(|j| match bias {
            Some(b) => _mm512_set1_ps(b[cb * CO_BLOCK + j]),
            None => _mm512_setzero_ps(),
        });
        let wb = wk[cb * c_in * 36..].as_ptr();
        let mut y0 = 0;
        while y0 < h {
            let rows = (h - y0).min(ROWS_BLOCK);
            // SAFETY: rows y0..y0 + rows + 2 ≤ h + 2 of each plane exist, the last row's load
            // at kx ≤ 2 reads into the slack; the asserts above bound wk.
            macro_rules! run {
                ($r:literal) => {{
                    let acc = unsafe { rows_block::<$r>(xp.as_ptr(), plane, c_in, y0, wb, init) };
                    for (j, row) in acc.iter().enumerate() {
                        let out = &mut y[((cb * CO_BLOCK + j) * h + y0) * w..][..$r * w];
                        for (i, &v) in row.iter().enumerate() {
                            // SAFETY: `out` holds rows·w floats; the mask writes w of them.
                            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(i * w), mask, v) };
                        }
                    }
                }};
            }
            match rows {
                5 => run!(5),
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
            y0 += rows;
        }
    }
}

/// Writes one image's padded planes from bits: `xp[c][(y + 1)·ROW + x + 1] = scale` where bit
/// `y·w + x` of plane `c` is set, zeros elsewhere (borders and the lanes past `w + 1`).
///
/// # Safety
/// AVX-512F; `words` holds `c` planes of `wpp` words covering `h·w` bits each, `xp` at least
/// `c·(h + 2)·ROW` floats; `w ≤ ROW − 2`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pad_bits(
    words: &[u64],
    wpp: usize,
    (c, h, w): (usize, usize, usize),
    scale: f32,
    xp: &mut [f32],
) {
    let plane = (h + 2) * ROW;
    assert!(words.len() >= c * wpp && wpp * 64 >= h * w && xp.len() >= c * plane && w + 2 <= ROW);
    let s = _mm512_set1_ps(scale);
    let zero = _mm512_setzero_ps();
    let row_mask = (1u32 << w) - 1;
    for ch in 0..c {
        let pw = &words[ch * wpp..(ch + 1) * wpp];
        let out = &mut xp[ch * plane..(ch + 1) * plane];
        // SAFETY: rows 0 and h + 1 and every row between are inside `out` (plane floats).
        unsafe {
            _mm512_mask_storeu_ps(out.as_mut_ptr(), 0xffff, zero);
            _mm512_mask_storeu_ps(out.as_mut_ptr().add((h + 1) * ROW), 0xffff, zero);
        }
        for y in 0..h {
            let bit = y * w;
            let (wi, sh) = (bit / 64, bit % 64);
            let mut b = pw[wi] >> sh;
            if sh + w > 64 {
                b |= pw[wi + 1] << (64 - sh);
            }
            let m = ((b as u32 & row_mask) << 1) as u16;
            // SAFETY: row y + 1 of `out`.
            unsafe {
                _mm512_mask_storeu_ps(
                    out.as_mut_ptr().add((y + 1) * ROW),
                    0xffff,
                    _mm512_maskz_mov_ps(m, s),
                )
            };
        }
    }
}

/// Writes one image's padded planes from f32: `xp[c][(y + 1)·ROW + x + 1] = x[c][y][x]`,
/// zeros elsewhere.
///
/// # Safety
/// AVX-512F; `x` holds `c·h·w` floats, `xp` at least `c·(h + 2)·ROW`; `w ≤ ROW − 2`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pad_f32(x: &[f32], (c, h, w): (usize, usize, usize), xp: &mut [f32]) {
    let plane = (h + 2) * ROW;
    assert!(x.len() >= c * h * w && xp.len() >= c * plane && w + 2 <= ROW);
    let zero = _mm512_setzero_ps();
    let m = (lanes(w) as u32) << 1;
    for ch in 0..c {
        let out = &mut xp[ch * plane..(ch + 1) * plane];
        // SAFETY: rows 0..h + 2 of `out`; row y of plane ch of `x` holds w floats, and the
        // expand-load reads only as many as its mask has bits.
        unsafe {
            _mm512_mask_storeu_ps(out.as_mut_ptr(), 0xffff, zero);
            _mm512_mask_storeu_ps(out.as_mut_ptr().add((h + 1) * ROW), 0xffff, zero);
            for y in 0..h {
                let v = _mm512_maskz_expandloadu_ps(m as u16, x.as_ptr().add((ch * h + y) * w));
                _mm512_mask_storeu_ps(out.as_mut_ptr().add((y + 1) * ROW), 0xffff, v);
            }
        }
    }
}
