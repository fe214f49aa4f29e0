//! The Winograd tile transforms with AVX-512F for planes at most [`MAX_W`] wide: one tile row
//! is one 16-lane vector (a lane per tile), so a tile row of `Bᵀ·d·B` is 16 permutes, 32 adds
//! and 16 masked stores, whatever the width. They compute what the portable transforms in
//! [`super`] compute, in the same order (same bits; `super`'s tests compare them).

use std::arch::x86_64::{
    __m512, __m512i, _mm512_add_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
    _mm512_maskz_permutex2var_ps, _mm512_mul_ps, _mm512_permutex2var_ps, _mm512_set1_ps,
    _mm512_setr_epi32, _mm512_setzero_ps, _mm512_sub_ps,
};

/// Widest plane these transforms take: a row is two 16-lane vectors.
pub const MAX_W: usize = 32;

/// The first `n ≤ 16` lanes.
pub(super) fn lanes(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

/// A row `row[0..w]` (zeros past `w`), as two 16-lane vectors.
///
/// # Safety
/// AVX-512F; `row` holds `w ≤ 32` elements.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load_row(row: &[f32], w: usize) -> (__m512, __m512) {
    debug_assert!(w <= MAX_W && row.len() >= w);
    // SAFETY: the masks cover `row[0..w]` only; masked-off lanes are not read.
    unsafe {
        let lo = _mm512_maskz_loadu_ps(lanes(w.min(16)), row.as_ptr());
        let hi = if w > 16 {
            _mm512_maskz_loadu_ps(lanes(w - 16), row.as_ptr().add(16))
        } else {
            _mm512_setzero_ps()
        };
        (lo, hi)
    }
}

/// The four column vectors of a padded row `p[j] = row[j − 1]` a tile row reads, a lane per
/// tile `tx`: `(p[2tx], p[2tx + 2], p[2tx + 1], p[2tx + 3])` = `(e, e1, o, o1)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn split(lo: __m512, hi: __m512) -> [__m512; 4] {
    let idx = |a: i32| -> __m512i {
        _mm512_setr_epi32(
            a,
            a + 2,
            a + 4,
            a + 6,
            a + 8,
            a + 10,
            a + 12,
            a + 14,
            a + 16,
            a + 18,
            a + 20,
            a + 22,
            a + 24,
            a + 26,
            a + 28,
            (a + 30) & 31,
        )
    };
    // e[tx] = row[2tx − 1] (lane 0 is the left padding); o1[15] = row[32] (past any row).
    let e = _mm512_maskz_permutex2var_ps(0xfffe, lo, idx(-1), hi);
    let e1 = _mm512_permutex2var_ps(lo, idx(1), hi);
    let o = _mm512_permutex2var_ps(lo, idx(0), hi);
    let o1 = _mm512_maskz_permutex2var_ps(0x7fff, lo, idx(2), hi);
    [e, e1, o, o1]
}

/// [`super::transform_input`] for `w ≤ MAX_W`.
///
/// # Safety
/// AVX-512F; `plane` holds `h·w` elements, `v` at least `15·ld + ⌈h/2⌉·⌈w/2⌉`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_input(plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    assert!(w <= MAX_W && plane.len() >= h * w && v.len() >= 15 * ld + th * tw);
    let keep = lanes(tw);
    let zero = _mm512_setzero_ps();
    for ty in 0..th {
        let mut rows = [[zero; 4]; 4];
        for (r, cols) in rows.iter_mut().enumerate() {
            let y = (2 * ty + r).wrapping_sub(1);
            if y < h {
                // SAFETY: AVX-512F (this function's contract); row `y` is inside `plane`.
                let (lo, hi) = unsafe { load_row(&plane[y * w..], w) };
                *cols = split(lo, hi);
            }
        }
        // Bᵀ on the rows (r0 − r2, r1 + r2, r2 − r1, r1 − r3), then B on the columns
        // (e − e1, o + e1, e1 − o, o − o1): the order of the portable transform.
        let [r0, r1, r2, r3] = rows;
        for (i, t) in [
            [0, 1, 2, 3].map(|c| _mm512_sub_ps(r0[c], r2[c])),
            [0, 1, 2, 3].map(|c| _mm512_add_ps(r1[c], r2[c])),
            [0, 1, 2, 3].map(|c| _mm512_sub_ps(r2[c], r1[c])),
            [0, 1, 2, 3].map(|c| _mm512_sub_ps(r1[c], r3[c])),
        ]
        .into_iter()
        .enumerate()
        {
            let [e, e1, o, o1] = t;
            let out = [
                _mm512_sub_ps(e, e1),
                _mm512_add_ps(o, e1),
                _mm512_sub_ps(e1, o),
                _mm512_sub_ps(o, o1),
            ];
            for (j, x) in out.into_iter().enumerate() {
                let at = (4 * i + j) * ld + ty * tw;
                // SAFETY: `at + tw ≤ 15·ld + th·tw ≤ v.len()` (asserted); only `tw` lanes.
                unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, x) };
            }
        }
    }
}

/// [`super::transform_output`] for `w ≤ MAX_W`.
///
/// # Safety
/// AVX-512F; `m` holds at least `15·ld + ⌈h/2⌉·⌈w/2⌉` elements, `out` `h·w`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_output(m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    assert!(w <= MAX_W && out.len() >= h * w && m.len() >= 15 * ld + th * tw);
    let keep = lanes(tw);
    // Interleaves y0 (even columns) and y1 (odd columns): lanes 0..16 and 16..32 of the row.
    let zip_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let zip_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for ty in 0..th {
        let base = ty * tw;
        // SAFETY: `xi·ld + base + tw ≤ 15·ld + th·tw ≤ m.len()` (asserted); `tw` lanes.
        let row =
            |xi: usize| unsafe { _mm512_maskz_loadu_ps(keep, m.as_ptr().add(xi * ld + base)) };
        let cols = [0, 1, 2, 3].map(|j| [row(j), row(4 + j), row(8 + j), row(12 + j)]);
        let s = [
            cols.map(|[m0, m1, m2, _]| _mm512_add_ps(_mm512_add_ps(m0, m1), m2)),
            cols.map(|[_, m1, m2, m3]| _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3)),
        ];
        for (dy, sr) in s.iter().enumerate() {
            let oy = 2 * ty + dy;
            if oy >= h {
                break;
            }
            let y0 = _mm512_add_ps(_mm512_add_ps(sr[0], sr[1]), sr[2]);
            let y1 = _mm512_sub_ps(_mm512_sub_ps(sr[1], sr[2]), sr[3]);
            let dst = out[oy * w..].as_mut_ptr();
            // SAFETY: the masks cover `out[oy·w..oy·w + w]`, inside `out` (asserted).
            unsafe {
                _mm512_mask_storeu_ps(
                    dst,
                    lanes(w.min(16)),
                    _mm512_permutex2var_ps(y0, zip_lo, y1),
                );
                if w > 16 {
                    let hi = _mm512_permutex2var_ps(y0, zip_hi, y1);
                    _mm512_mask_storeu_ps(dst.add(16), lanes(w - 16), hi);
                }
            }
        }
    }
}

/// [`super::weight`]'s `transform_grad` for `w ≤ MAX_W`: `G·y·Gᵀ` of every 2×2 tile.
///
/// # Safety
/// AVX-512F; `plane` holds `h·w` elements, `u` at least `15·ld + ⌈h/2⌉·⌈w/2⌉`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_grad(plane: &[f32], h: usize, w: usize, u: &mut [f32], ld: usize) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    assert!(w <= MAX_W && plane.len() >= h * w && u.len() >= 15 * ld + th * tw);
    let keep = lanes(tw);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let half = _mm512_set1_ps(0.5);
    for ty in 0..th {
        // (even, odd) columns of rows 2ty and 2ty + 1; zeros past the plane.
        let mut rows = [[_mm512_setzero_ps(); 2]; 2];
        for (i, r) in rows.iter_mut().enumerate() {
            let y = 2 * ty + i;
            if y < h {
                // SAFETY: AVX-512F (this function's contract); row `y` is inside `plane`.
                let (lo, hi) = unsafe { load_row(&plane[y * w..], w) };
                *r = [
                    _mm512_permutex2var_ps(lo, even, hi),
                    _mm512_permutex2var_ps(lo, odd, hi),
                ];
            }
        }
        // G on the rows (y0, (y0 + y1)/2, (y0 − y1)/2, y1), then on the columns
        // (e, (e + o)/2, (e − o)/2, o): the portable transform's order.
        let [y0, y1] = rows;
        let comb = [
            y0,
            [0, 1].map(|c| _mm512_mul_ps(half, _mm512_add_ps(y0[c], y1[c]))),
            [0, 1].map(|c| _mm512_mul_ps(half, _mm512_sub_ps(y0[c], y1[c]))),
            y1,
        ];
        for (i, [e, o]) in comb.into_iter().enumerate() {
            let out = [
                e,
                _mm512_mul_ps(half, _mm512_add_ps(e, o)),
                _mm512_mul_ps(half, _mm512_sub_ps(e, o)),
                o,
            ];
            for (j, v) in out.into_iter().enumerate() {
                let at = (4 * i + j) * ld + ty * tw;
                // SAFETY: `at + tw ≤ 15·ld + th·tw ≤ u.len()` (asserted); only `tw` lanes.
                unsafe { _mm512_mask_storeu_ps(u.as_mut_ptr().add(at), keep, v) };
            }
        }
    }
}
