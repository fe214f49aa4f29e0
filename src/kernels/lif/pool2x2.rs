//! 2×2, stride-2 max pooling of spike planes (every element `+0.0` or one scale `s > 0`) and
//! its gradient routing, with AVX-512F for planes at most [`MAX_W`] wide: one output row is one
//! pass over two input rows of at most two vectors each, the window selection is arithmetic
//! on 32-bit lane masks, and the gradient rows are written with masked stores.
//!
//! Why: the portable versions ([`super::planes::max_pool_spikes`], the training kernel's
//! `route_2x2`) work on `u64` pairs four windows per vector, with a scalar tail on every row,
//! and `mnist-cnn`'s 28- and 14-wide planes are mostly tail and row overhead. With these the
//! pooling fell from 2.3 to 1.2 % of an mnist-cnn training step (`perf`), the fused stem
//! kernels ran 24 % (eval) and 10 % (training) faster; the routing only fell from 4.6 to
//! 4.2 %: it waited on loads of LIF outputs that the backward's recompute left in L2. Hence
//! [`route_bits`], which reads the recompute's spike bits instead (the outputs are then never
//! written): the fused stem training kernel ran 8 % (1 thread) and 12 % (2 threads) faster
//! (criterion `train_planes/stem_fused`, interleaved runs). Likewise [`max_pool_bits`] pools
//! the training forward's spike bits, whose values are then never written. Same bits as the
//! portable versions: the pooled value is the OR of the window's bits, the routed gradient
//! `0.0 + dy`.

use super::route::{bits_at, first_lanes, pooled_bits, selected};
use crate::kernels::pool::PoolGeom;
use std::arch::x86_64::{
    __m512, __m512i, _mm512_add_ps, _mm512_castps_si512, _mm512_castsi512_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_maskz_mov_ps, _mm512_or_si512,
    _mm512_permutex2var_epi32, _mm512_permutexvar_ps, _mm512_set1_ps, _mm512_setr_epi32,
    _mm512_setzero_ps, _mm512_test_epi32_mask,
};

/// Widest plane handled here: an input row is at most two vectors.
pub(super) const MAX_W: usize = 32;

/// True if these kernels run for `g` on this CPU: 2×2 windows, stride 2, no padding, at most
/// [`MAX_W`] wide, AVX-512F.
pub(super) fn applies(g: &PoolGeom) -> bool {
    g.k == 2
        && g.stride == 2
        && g.pad == 0
        && g.w <= MAX_W
        && std::arch::is_x86_feature_detected!("avx512f")
}

/// The first `n ≤ 32` lanes of a 32-lane pair of vectors, as (low, high) masks.
fn lanes32(n: usize) -> (u16, u16) {
    let m = first_lanes(n);
    (m as u16, (m >> 16) as u16)
}

/// Elements `0..n` of a row (`n ≤ 32`) as two vectors, zeros past `n`.
///
/// # Safety
/// AVX-512F; `row` holds at least `n` elements.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_row(row: &[f32], n: usize) -> (__m512, __m512) {
    debug_assert!(n <= MAX_W && row.len() >= n);
    let (lo, hi) = lanes32(n);
    // SAFETY: the masks cover `row[0..n]` only; masked-off lanes are not read.
    unsafe {
        (
            _mm512_maskz_loadu_ps(lo, row.as_ptr()),
            _mm512_maskz_loadu_ps(hi, row.as_ptr().wrapping_add(16)),
        )
    }
}

/// Lanes whose bits are nonzero, as one 32-bit mask.
#[inline]
#[target_feature(enable = "avx512f")]
fn nonzero((lo, hi): (__m512, __m512)) -> u32 {
    let (lo, hi) = (_mm512_castps_si512(lo), _mm512_castps_si512(hi));
    _mm512_test_epi32_mask(lo, lo) as u32 | (_mm512_test_epi32_mask(hi, hi) as u32) << 16
}

/// The lane indices `f(0), …, f(15)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn indices(f: impl Fn(i32) -> i32) -> __m512i {
    _mm512_setr_epi32(
        f(0),
        f(1),
        f(2),
        f(3),
        f(4),
        f(5),
        f(6),
        f(7),
        f(8),
        f(9),
        f(10),
        f(11),
        f(12),
        f(13),
        f(14),
        f(15),
    )
}

/// The portable pooling's result: `y[oy·ow + ox]` is the OR of the bits of window `(oy, ox)`
/// of plane `o`.
///
/// # Safety
/// AVX-512F; `g` as [`applies`] requires; `o` holds `h·w` elements, `y` `oh·ow`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn max_pool(g: &PoolGeom, o: &[f32], y: &mut [f32]) {
    assert!(g.w <= MAX_W && o.len() >= g.h * g.w && y.len() >= g.oh * g.ow);
    // Even and odd lanes of a 32-lane pair.
    let (even, odd) = (indices(|k| 2 * k), indices(|k| 2 * k + 1));
    let n = 2 * g.ow;
    let out = lanes32(g.ow).0;
    for oy in 0..g.oh {
        // SAFETY: AVX-512F (the contract); rows 2oy and 2oy + 1 < h hold `w ≥ n` elements.
        let (a, b) = unsafe {
            (
                load_row(&o[2 * oy * g.w..], n),
                load_row(&o[(2 * oy + 1) * g.w..], n),
            )
        };
        let v0 = _mm512_or_si512(_mm512_castps_si512(a.0), _mm512_castps_si512(b.0));
        let v1 = _mm512_or_si512(_mm512_castps_si512(a.1), _mm512_castps_si512(b.1));
        let pooled = _mm512_or_si512(
            _mm512_permutex2var_epi32(v0, even, v1),
            _mm512_permutex2var_epi32(v0, odd, v1),
        );
        // SAFETY: `ow ≤ 16` lanes of output row `oy`, inside `y` (asserted).
        unsafe {
            _mm512_mask_storeu_ps(
                y.as_mut_ptr().add(oy * g.ow),
                out,
                _mm512_castsi512_ps(pooled),
            )
        };
    }
}

/// The portable `max_pool_bits`' result: `y[oy·ow + ox]` is `scale` if window `(oy, ox)` has
/// a spike, `+0.0` if not; bit `bit0 + i` of `spikes` is element `i` of the plane.
///
/// # Safety
/// AVX-512F; `g` as [`applies`] requires; `y` holds `oh·ow` elements.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn max_pool_bits(
    g: &PoolGeom,
    spikes: &[u8],
    bit0: usize,
    scale: f32,
    y: &mut [f32],
) {
    assert!(g.w <= MAX_W && y.len() >= g.oh * g.ow);
    let n = 2 * g.ow;
    let (out, value) = (lanes32(g.ow).0, _mm512_set1_ps(scale));
    for oy in 0..g.oh {
        let at = |row: usize| bits_at(spikes, bit0 + row * g.w, n);
        let windows = pooled_bits(at(2 * oy), at(2 * oy + 1));
        // SAFETY: `ow ≤ 16` lanes of output row `oy`, inside `y` (asserted).
        unsafe {
            _mm512_mask_storeu_ps(
                y.as_mut_ptr().add(oy * g.ow),
                out,
                _mm512_maskz_mov_ps(windows, value),
            )
        };
    }
}

/// The portable `route_2x2`'s result: plane `o` (spike values) becomes its gradient, `0.0 +
/// dy[oy·ow + ox]` at the first nonzero element of window `(oy, ox)` (its first element if
/// none), `+0.0` everywhere else, the column and row in no window included.
///
/// # Safety
/// AVX-512F; `g` as [`applies`] requires; `o` holds `h·w` elements, `dy` `oh·ow`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn route(g: &PoolGeom, o: &mut [f32], dy: &[f32]) {
    let n = 2 * g.ow;
    // SAFETY: AVX-512F and the lengths are the contract, forwarded.
    unsafe {
        // AVX-512F (the contract); row `row < h` holds `w ≥ n` elements.
        route_with(g, o, dy, |o, row| nonzero(load_row(&o[row * g.w..], n)))
    }
}

/// [`route`] reading the spikes from a bit row instead of the plane's values: bit `bit0 + i`
/// of `spikes` is element `i` of the plane, and `o`'s contents are ignored. The portable
/// `route_2x2_bits`' result.
///
/// # Safety
/// AVX-512F; `g` as [`applies`] requires; `o` holds `h·w` elements, `dy` `oh·ow`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn route_bits(
    g: &PoolGeom,
    o: &mut [f32],
    dy: &[f32],
    spikes: &[u8],
    bit0: usize,
) {
    let n = 2 * g.ow;
    // SAFETY: AVX-512F and the lengths are the contract, forwarded.
    unsafe { route_with(g, o, dy, |_, row| bits_at(spikes, bit0 + row * g.w, n)) }
}

/// The routing of [`route`] and [`route_bits`], with `spikes(o, row)` the spike mask of input
/// row `row` (lane `x` = column `x`; lanes past the windows are ignored).
///
/// # Safety
/// AVX-512F; `g` as [`applies`] requires; `o` holds `h·w` elements, `dy` `oh·ow`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn route_with(
    g: &PoolGeom,
    o: &mut [f32],
    dy: &[f32],
    spikes: impl Fn(&[f32], usize) -> u32,
) {
    assert!(g.w <= MAX_W && o.len() >= g.h * g.w && dy.len() >= g.oh * g.ow);
    // Each of the first (last) 8 gradients twice: the two lanes of its window in a row.
    let (dup_lo, dup_hi) = (indices(|k| k / 2), indices(|k| k / 2 + 8));
    let windows = first_lanes(2 * g.ow);
    let row_mask = lanes32(g.w);
    for oy in 0..g.oh {
        let (top, bottom) = selected(spikes(o, 2 * oy), spikes(o, 2 * oy + 1), windows);
        // SAFETY: `ow ≤ 16` lanes of gradient row `oy`, inside `dy` (asserted).
        let d = unsafe { _mm512_maskz_loadu_ps(lanes32(g.ow).0, dy.as_ptr().add(oy * g.ow)) };
        let d = _mm512_add_ps(_mm512_setzero_ps(), d);
        let (d_lo, d_hi) = (
            _mm512_permutexvar_ps(dup_lo, d),
            _mm512_permutexvar_ps(dup_hi, d),
        );
        for (row, sel) in [(2 * oy, top), (2 * oy + 1, bottom)] {
            let p = o[row * g.w..(row + 1) * g.w].as_mut_ptr();
            // SAFETY: the row masks cover `o[row·w..(row + 1)·w]`, inside `o` (asserted).
            unsafe {
                _mm512_mask_storeu_ps(p, row_mask.0, _mm512_maskz_mov_ps(sel as u16, d_lo));
                _mm512_mask_storeu_ps(
                    p.wrapping_add(16),
                    row_mask.1,
                    _mm512_maskz_mov_ps((sel >> 16) as u16, d_hi),
                );
            }
        }
    }
    o[2 * g.oh * g.w..g.h * g.w].fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::lif::planes::{max_pool_bits_portable, max_pool_spikes_portable};
    use crate::kernels::lif::route::{route_2x2_bits_portable, route_2x2_portable};

    /// The kernels give the portable versions' bits on every width up to 32 (odd ones with a
    /// column in no window), odd and even heights, spike densities from none to all, and
    /// gradients with `−0.0` (routed as `+0.0`); the routing from a bit row (both versions)
    /// gives the routing from the values' bits, and the pooling from a bit row the portable
    /// one's.
    #[test]
    fn match_the_portable_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            seed >> 8
        };
        let s = 0.75f32;
        for w in 2..=MAX_W {
            for h in [2, 3, 4, 7, 9] {
                for density in [0u32, 30, 60, 100] {
                    let g = PoolGeom::new(1, h, w, 2, 2, 0).unwrap();
                    assert!(applies(&g));
                    let o: Vec<f32> = (0..h * w)
                        .map(|_| if next() % 100 < density { s } else { 0.0 })
                        .collect();
                    let dy: Vec<f32> = (0..g.oh * g.ow)
                        .map(|i| match i % 5 {
                            0 => -0.0,
                            _ => next() as f32 / (1 << 24) as f32 - 0.5,
                        })
                        .collect();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let (mut want, mut got) = (vec![f32::NAN; dy.len()], vec![f32::NAN; dy.len()]);
                    max_pool_spikes_portable(&g, &o, &mut want);
                    // SAFETY: AVX-512F checked above; `applies(&g)`; lengths match.
                    unsafe { max_pool(&g, &o, &mut got) };
                    assert_eq!(bits(&got), bits(&want), "pool {h}x{w} d{density}");
                    let (mut want, mut got) = (o.clone(), o.clone());
                    route_2x2_portable(&g, &mut want, &dy);
                    // SAFETY: as above.
                    unsafe { route(&g, &mut got, &dy) };
                    assert_eq!(bits(&got), bits(&want), "route {h}x{w} d{density}");
                    // The same spikes as a bit row starting inside a byte.
                    let bit0 = (h + w) % 8;
                    let mut spikes = vec![0u8; (bit0 + h * w).div_ceil(8)];
                    for (i, _) in o.iter().enumerate().filter(|(_, &v)| v != 0.0) {
                        spikes[(bit0 + i) / 8] |= 1 << ((bit0 + i) % 8);
                    }
                    let mut got = vec![f32::NAN; o.len()];
                    // SAFETY: as above.
                    unsafe { route_bits(&g, &mut got, &dy, &spikes, bit0) };
                    assert_eq!(bits(&got), bits(&want), "route bits {h}x{w} d{density}");
                    let mut got = vec![f32::NAN; o.len()];
                    route_2x2_bits_portable(&g, &mut got, &dy, &spikes, bit0);
                    assert_eq!(bits(&got), bits(&want), "portable bits {h}x{w} d{density}");
                    let (mut want, mut got) = (vec![f32::NAN; dy.len()], vec![f32::NAN; dy.len()]);
                    max_pool_bits_portable(&g, &spikes, bit0, s, &mut want);
                    // SAFETY: as above.
                    unsafe { max_pool_bits(&g, &spikes, bit0, s, &mut got) };
                    assert_eq!(bits(&got), bits(&want), "pool bits {h}x{w} d{density}");
                }
            }
        }
        let wide = PoolGeom::new(1, 4, MAX_W + 1, 2, 2, 0).unwrap();
        assert!(!applies(&wide) && !applies(&PoolGeom::new(1, 4, 4, 2, 1, 0).unwrap()));
    }
}
