//! The F(4×4, 3×3) tile transforms with AVX-512F for planes at most [`MAX_W`] wide: a lane
//! per tile of a tile row (at most 8). A row of the plane is two 16-lane vectors; `Bᵀ` runs
//! down six of them at once, then six permutes pick each tile's window columns out of a
//! transformed row. The arithmetic is [`super::bt`] and [`super::at`] on `f32x16`, in the
//! portable transforms' order, so the bits are theirs (`super`'s tests compare them).

use super::super::avx512::{lanes, load_row};
use super::{at, bt};
use std::arch::x86_64::{
    __m512, __m512i, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_blend_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_maskz_permutex2var_ps,
    _mm512_permutex2var_ps, _mm512_setr_epi32,
};
use wide::f32x16;

/// Widest plane these transforms take (a row is two 16-lane vectors): the F(2×2) ones',
/// so one detection serves both.
pub const MAX_W: usize = super::super::avx512::MAX_W;

/// For window column `j`, the permute indices (lane `t` reads padded column `4t + j`, i.e.
/// row element `4t + j − 1` of the 32 in `(lo, hi)`) and the lanes whose element exists.
#[inline]
#[target_feature(enable = "avx512f")]
fn window_column(j: usize) -> (__m512i, u16) {
    let mut idx = [0i32; 16];
    let mut keep = 0u16;
    for (t, i) in idx.iter_mut().enumerate() {
        let x = 4 * t as i32 + j as i32 - 1;
        *i = x & 31;
        if (0..32).contains(&x) {
            keep |= 1 << t;
        }
    }
    // SAFETY: `idx` is 64 bytes; the load is unaligned.
    (unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }, keep)
}

/// [`super::transform_input`] for `w ≤ MAX_W`.
///
/// # Safety
/// AVX-512F; `plane` holds `h·w` elements, `v` at least `35·ld + ⌈h/4⌉·⌈w/4⌉`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_input(plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    assert!(w <= MAX_W && plane.len() >= h * w && v.len() >= 35 * ld + th * tw);
    if tw == 4 {
        // SAFETY: as this function's contract; `tw == 4` checked.
        return unsafe { transform_input_4_tiles_wide(plane, h, w, v, ld) };
    }
    let keep = lanes(tw);
    let cols = [
        window_column(0),
        window_column(1),
        window_column(2),
        window_column(3),
        window_column(4),
        window_column(5),
    ];
    let zero = f32x16::splat(0.0);
    for ty in 0..th {
        let mut rows = [[zero; 2]; 6];
        for (r, halves) in rows.iter_mut().enumerate() {
            let y = (4 * ty + r).wrapping_sub(1);
            if y < h {
                // SAFETY: AVX-512F (this function's contract); row `y` is inside `plane`.
                let (lo, hi) = unsafe { load_row(&plane[y * w..], w) };
                *halves = [lo.into(), hi.into()];
            }
        }
        // Bᵀ down the rows, each half of the row at once (the right half is zero below 17).
        // (Explicit arrays, not `map`: `map`'s closures are not inlined into this
        // `target_feature` function, and the arrays then go through memory.)
        let half = |k: usize| {
            let r = &rows;
            [r[0][k], r[1][k], r[2][k], r[3][k], r[4][k], r[5][k]]
        };
        let lo = bt(half(0));
        let hi = if w > 16 { bt(half(1)) } else { [zero; 6] };
        for i in 0..6 {
            let (l, h): (__m512, __m512) = (lo[i].into(), hi[i].into());
            let pick = |j: usize| {
                let (idx, k) = cols[j];
                f32x16::from(_mm512_maskz_permutex2var_ps(k, l, idx, h))
            };
            let window = [pick(0), pick(1), pick(2), pick(3), pick(4), pick(5)];
            for (j, x) in bt(window).into_iter().enumerate() {
                let at = (6 * i + j) * ld + ty * tw;
                // SAFETY: `at + tw ≤ 35·ld + th·tw ≤ v.len()` (asserted); only `tw` lanes.
                unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, x.into()) };
            }
        }
    }
}

/// `down[j][a]`: `Aᵀ` down column `j` of the 6×6 products `M` (`$m`, matrices `$ld` apart)
/// of the tiles at `$base`, lanes `$keep`. Shared by both output transforms. A macro, not a
/// function: as a `target_feature` function it was not inlined, and its 24 vectors went back
/// through the stack (`perf`: its prologue's spills stalled on a full store buffer).
///
/// Safety (the caller's): AVX-512F; the `$keep` lanes from `xi·$ld + $base` are inside `$m`
/// for every `xi < 36`.
macro_rules! down_columns {
    ($m:expr, $ld:expr, $base:expr, $keep:expr) => {{
        let (m, ld, base, keep): (&[f32], usize, usize, u16) = ($m, $ld, $base, $keep);
        // SAFETY: the caller's contract; masked-off lanes are not read.
        let row = |xi: usize| -> f32x16 {
            unsafe { _mm512_maskz_loadu_ps(keep, m.as_ptr().add(xi * ld + base)) }.into()
        };
        let col = |j: usize| {
            [
                row(j),
                row(6 + j),
                row(12 + j),
                row(18 + j),
                row(24 + j),
                row(30 + j),
            ]
        };
        [
            at(col(0)),
            at(col(1)),
            at(col(2)),
            at(col(3)),
            at(col(4)),
            at(col(5)),
        ]
    }};
}

/// [`super::transform_output`] for `w ≤ MAX_W`.
///
/// # Safety
/// AVX-512F; `m` holds at least `35·ld + ⌈h/4⌉·⌈w/4⌉` elements, `out` `h·w`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_output(m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    assert!(w <= MAX_W && out.len() >= h * w && m.len() >= 35 * ld + th * tw);
    if tw == 4 {
        // SAFETY: as this function's contract; `tw == 4` checked.
        return unsafe { transform_output_4_tiles_wide(m, ld, h, w, out) };
    }
    let keep = lanes(tw);
    // Interleave the four output columns of each block: first pairs (y0, y1) and (y2, y3)
    // lane by lane, then the pairs two by two: blocks 0–3 in the low vector, 4–7 the high.
    let zip2 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let zip4_lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    let zip4_hi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    for ty in 0..th {
        let base = ty * tw;
        // `35·ld + base + tw ≤ 35·ld + th·tw ≤ m.len()` (asserted): the macro's contract.
        let down: [[f32x16; 4]; 6] = down_columns!(m, ld, base, keep);
        for a in 0..4 {
            let oy = 4 * ty + a;
            if oy >= h {
                break;
            }
            let d = &down;
            let [y0, y1, y2, y3] = at([d[0][a], d[1][a], d[2][a], d[3][a], d[4][a], d[5][a]]);
            let (y0, y1, y2, y3): (__m512, __m512, __m512, __m512) =
                (y0.into(), y1.into(), y2.into(), y3.into());
            let p01 = _mm512_permutex2var_ps(y0, zip2, y1);
            let p23 = _mm512_permutex2var_ps(y2, zip2, y3);
            let dst = out[oy * w..].as_mut_ptr();
            // SAFETY: the masks cover `out[oy·w..oy·w + w]`, inside `out` (asserted).
            unsafe {
                let lo = _mm512_permutex2var_ps(p01, zip4_lo, p23);
                _mm512_mask_storeu_ps(dst, lanes(w.min(16)), lo);
                if w > 16 {
                    let hi = _mm512_permutex2var_ps(p01, zip4_hi, p23);
                    _mm512_mask_storeu_ps(dst.add(16), lanes(w - 16), hi);
                }
            }
        }
    }
}

/// For window column `j` of four tile rows at once (see [`transform_input_4_tiles_wide`]): the
/// permute indices that put element `4tx + j − 1` of tile row `q`'s transformed row at lane
/// `4q + tx` (tile rows `2k` and `2k + 1` read as the two sources of one permute), and the
/// lanes whose element lies in the row (`0 ≤ 4tx + j − 1 < 16`).
#[inline]
#[target_feature(enable = "avx512f")]
fn window_column_4_rows(j: usize) -> (__m512i, u16) {
    let mut idx = [0i32; 16];
    let mut keep = 0u16;
    for (lane, i) in idx.iter_mut().enumerate() {
        let (q, tx) = (lane / 4, lane % 4);
        let x = 4 * tx as i32 + j as i32 - 1;
        *i = (x & 15) + 16 * (q as i32 % 2);
        if (0..16).contains(&x) {
            keep |= 1 << lane;
        }
    }
    // SAFETY: `idx` is 64 bytes; the load is unaligned.
    (unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }, keep)
}

/// [`transform_input`] of a plane four tiles wide (`w` 13 to 16): the windows of four tile
/// rows fill a vector (lane `4q + tx`: tile row `ty0 + q`, column `tx`), so the second `Bᵀ`
/// and the stores run on all 16 lanes instead of 4. Each tile row's rows go down `Bᵀ` as in
/// [`transform_input`]; two permutes and a blend gather a window column of four tile rows.
///
/// # Safety
/// As [`transform_input`], and `⌈w/4⌉ = 4`.
#[target_feature(enable = "avx512f")]
unsafe fn transform_input_4_tiles_wide(
    plane: &[f32],
    h: usize,
    w: usize,
    v: &mut [f32],
    ld: usize,
) {
    let th = h.div_ceil(4);
    debug_assert!(w <= 16 && w.div_ceil(4) == 4);
    let cols = [
        window_column_4_rows(0),
        window_column_4_rows(1),
        window_column_4_rows(2),
        window_column_4_rows(3),
        window_column_4_rows(4),
        window_column_4_rows(5),
    ];
    let zero = f32x16::splat(0.0);
    for ty0 in (0..th).step_by(4) {
        let rows = (th - ty0).min(4);
        // down[q][i]: Bᵀ down the six plane rows of tile row ty0 + q (zero past the plane).
        // (Built whole by macros, not zeroed and filled, nor by closures: the zeroing was a
        // `memset` call per group, and the closures were not inlined.)
        macro_rules! plane_row {
            ($y:expr) => {{
                let y: usize = $y;
                if y < h {
                    // SAFETY: AVX-512F (this function's contract); row `y` is in `plane`.
                    f32x16::from(unsafe { load_row(&plane[y * w..], w) }.0)
                } else {
                    zero
                }
            }};
        }
        macro_rules! tile_row {
            ($q:expr) => {{
                if $q < rows {
                    let y = (4 * (ty0 + $q)).wrapping_sub(1);
                    bt([
                        plane_row!(y),
                        plane_row!(y.wrapping_add(1)),
                        plane_row!(y.wrapping_add(2)),
                        plane_row!(y.wrapping_add(3)),
                        plane_row!(y.wrapping_add(4)),
                        plane_row!(y.wrapping_add(5)),
                    ])
                } else {
                    [zero; 6]
                }
            }};
        }
        let down = [tile_row!(0), tile_row!(1), tile_row!(2), tile_row!(3)];
        let keep = lanes(4 * rows);
        // `i` picks the same row out of the four tile rows' arrays.
        #[allow(clippy::needless_range_loop)]
        for i in 0..6 {
            let (a, b, c, d): (__m512, __m512, __m512, __m512) = (
                down[0][i].into(),
                down[1][i].into(),
                down[2][i].into(),
                down[3][i].into(),
            );
            let pick = |j: usize| {
                let (idx, k) = cols[j];
                let low = _mm512_maskz_permutex2var_ps(k & 0x00ff, a, idx, b);
                let high = _mm512_maskz_permutex2var_ps(k & 0xff00, c, idx, d);
                f32x16::from(_mm512_mask_blend_ps(0xff00, low, high))
            };
            let window = [pick(0), pick(1), pick(2), pick(3), pick(4), pick(5)];
            for (j, x) in bt(window).into_iter().enumerate() {
                let at = (6 * i + j) * ld + 4 * ty0;
                // SAFETY: `at + 4·rows ≤ 35·ld + th·4 ≤ v.len()` (asserted); masked lanes.
                unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, x.into()) };
            }
        }
    }
}

/// [`transform_output`] of a plane four tiles wide (`w` 13 to 16, `mnist-cnn`'s 14×14): the
/// tiles of four tile rows fill a vector (lane `4q + tx`: tile row `ty0 + q`, column `tx`),
/// so `Aᵀ` runs on all 16 lanes instead of 4, a quarter of the arithmetic and of the loads.
///
/// # Safety
/// As [`transform_output`], and `⌈w/4⌉ = 4`.
#[target_feature(enable = "avx512f")]
unsafe fn transform_output_4_tiles_wide(m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
    let th = h.div_ceil(4);
    debug_assert_eq!(w.div_ceil(4), 4);
    // As in `transform_output`, with the pairs of lanes 8–15 as well.
    let zip2_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let zip2_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let zip4_lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    let zip4_hi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    // Not zeroed (a `memset` per plane): every row a group copies out is stored first.
    let mut stage = std::mem::MaybeUninit::<[f32; STAGE]>::uninit();
    let stage = stage.as_mut_ptr().cast::<f32>();
    for ty0 in (0..th).step_by(4) {
        let rows = (th - ty0).min(4);
        let keep = lanes(4 * rows);
        let base = 4 * ty0;
        // `35·ld + base + 4·rows ≤ 35·ld + th·4 ≤ m.len()` (asserted): the macro's contract.
        let down: [[f32x16; 4]; 6] = down_columns!(m, ld, base, keep);
        for a in 0..4 {
            let d = &down;
            let [y0, y1, y2, y3] = at([d[0][a], d[1][a], d[2][a], d[3][a], d[4][a], d[5][a]]);
            let (y0, y1, y2, y3): (__m512, __m512, __m512, __m512) =
                (y0.into(), y1.into(), y2.into(), y3.into());
            let (p01, p23) = (
                _mm512_permutex2var_ps(y0, zip2_lo, y1),
                _mm512_permutex2var_ps(y2, zip2_lo, y3),
            );
            let (q01, q23) = (
                _mm512_permutex2var_ps(y0, zip2_hi, y1),
                _mm512_permutex2var_ps(y2, zip2_hi, y3),
            );
            let out_rows = [
                _mm512_permutex2var_ps(p01, zip4_lo, p23),
                _mm512_permutex2var_ps(p01, zip4_hi, p23),
                _mm512_permutex2var_ps(q01, zip4_lo, q23),
                _mm512_permutex2var_ps(q01, zip4_hi, q23),
            ];
            for (q, v) in out_rows.into_iter().enumerate().take(rows) {
                let r = 4 * q + a;
                // SAFETY: `r·w + 16 ≤ 15·16 + 16 = STAGE`; the mask covers `w` lanes.
                unsafe { _mm512_mask_storeu_ps(stage.add(r * w), lanes(w), v) };
            }
        }
        // The group's rows are one contiguous run of `out`.
        let (y0, y1) = (4 * ty0, (4 * ty0 + 16).min(h));
        // SAFETY: rows `0..4·rows ≥ y1 − y0` of `stage` were stored above, so its first
        // `(y1 − y0)·w` floats are initialized; `out[y0·w..y1·w]` is inside `out` (asserted).
        unsafe {
            let rows = std::slice::from_raw_parts(stage, (y1 - y0) * w);
            store_aligned(rows, out[y0 * w..].as_mut_ptr());
        }
    }
}

/// Floats in [`transform_output_4_tiles_wide`]'s staging buffer: 16 rows of at most 16, and
/// a vector of slack for the last row's full-width masked store.
const STAGE: usize = 16 * 16 + 16;

/// `dst[..src.len()] = src` with 64-byte-aligned stores: a masked head up to the first cache
/// line boundary, whole lines, a masked tail. The output transform's rows are 56 bytes (14
/// wide): stored row by row, 12 of 14 cross a cache line, and the stores of a plane that
/// misses in cache fill the store buffer (`perf`: ≈ 60 % of the transform's samples on the
/// stack spills of its next call).
///
/// # Safety
/// AVX-512F; `dst` valid for `src.len()` writes.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_aligned(src: &[f32], dst: *mut f32) {
    let n = src.len();
    let head = ((64 - (dst as usize & 63)) & 63) / 4;
    let head = head.min(n);
    let mut i = 0;
    // SAFETY: every access below is inside `src[..n]` and `dst[..n]` (masked lanes are not
    // touched); `dst.add(i)` is 64-byte aligned after the head whenever `dst` is 4-aligned.
    unsafe {
        if head > 0 {
            let v = _mm512_maskz_loadu_ps(lanes(head), src.as_ptr());
            _mm512_mask_storeu_ps(dst, lanes(head), v);
            i = head;
        }
        // An all-lanes mask the compiler cannot see through: plain vector stores in this
        // loop became a `memcpy` call (2.3 % of a `mnist-cnn` training step).
        let all = std::hint::black_box(u16::MAX);
        while i + 16 <= n {
            let v = _mm512_loadu_ps(src.as_ptr().add(i));
            _mm512_mask_storeu_ps(dst.add(i), all, v);
            i += 16;
        }
        if i < n {
            let k = lanes(n - i);
            let v = _mm512_maskz_loadu_ps(k, src.as_ptr().add(i));
            _mm512_mask_storeu_ps(dst.add(i), k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_aligned_writes_exactly_its_range_at_every_alignment() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let src: Vec<f32> = (0..300).map(|i| i as f32 + 0.5).collect();
        for offset in 0..20 {
            for n in [0, 1, 3, 15, 16, 17, 31, 56, 196, 256] {
                let mut dst = vec![f32::NAN; offset + n + 40];
                // SAFETY: AVX-512F checked; `dst[offset..offset + n]` is inside `dst`.
                unsafe { store_aligned(&src[..n], dst.as_mut_ptr().add(offset)) };
                for (i, &d) in dst.iter().enumerate() {
                    let inside = (offset..offset + n).contains(&i);
                    let want = if inside { src[i - offset] } else { f32::NAN };
                    assert_eq!(
                        d.to_bits(),
                        want.to_bits(),
                        "offset {offset}, n {n}, at {i}"
                    );
                }
            }
        }
    }
}
