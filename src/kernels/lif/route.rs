//! Max-pool gradient routing for the fused training kernel ([`super::train_planes`]): one LIF
//! output plane becomes its gradient, `dy` routed to each window's maximum as
//! [`pool::max_backward`] does after [`pool::max_forward`].
//!
//! For 2×2, stride-2 windows of spike outputs the maximum is a window's first spiking element
//! (its first element if none spikes), so the routing needs only the spike bits. It reads them
//! either from the output values ([`route`]: nonzero exactly when the bits are) or, cheaper,
//! from the tape rebuild's bit rows ([`route_2x2_bits`]), which are 1/32 of the bytes: the
//! values are then never written. Every version writes the same bits: the selected element
//! is `0.0 + dy` (`max_backward`'s `+=` on a zeroed plane, so −0.0 becomes +0.0), every other
//! one `+0.0`, including a column and row in no window.

use crate::kernels::pool::{self, PoolGeom};

/// Lanes `2k` of a 32-bit lane mask: the first element of each window in a row.
pub(super) const EVEN: u32 = 0x5555_5555;

/// The elements that receive a gradient, as lane masks over the window's two rows: `top` and
/// `bottom` hold the spike bits of the rows (lanes `2k`, `2k + 1` are window k), `windows` the
/// lanes that belong to a window. The first of the window's four elements (row-major) that
/// spikes is selected, else its first element.
#[inline(always)]
pub(super) fn selected(top: u32, bottom: u32, windows: u32) -> (u32, u32) {
    let (a, b) = (top & EVEN, (top >> 1) & EVEN);
    let (c, e) = (bottom & EVEN, (bottom >> 1) & EVEN);
    let first = a | (!(b | c | e) & EVEN);
    let second = !a & b;
    let third = !a & !b & c;
    let fourth = !a & !b & !c & e;
    (
        (first | second << 1) & windows,
        (third | fourth << 1) & windows,
    )
}

/// The 2×2 windows of a row pair that hold a spike: bit `k` of the result is window `k`, from
/// the rows' spike bits `top` and `bottom` (lanes `2k`, `2k + 1` are window k).
#[inline(always)]
pub(super) fn pooled_bits(top: u32, bottom: u32) -> u16 {
    let any = top | bottom;
    // Bits 2k (a window's OR) moved to bits k.
    let x = (any | any >> 1) & EVEN;
    let x = (x | x >> 1) & 0x3333_3333;
    let x = (x | x >> 2) & 0x0F0F_0F0F;
    let x = (x | x >> 4) & 0x00FF_00FF;
    (x | x >> 8) as u16
}

/// The first `n ≤ 32` lanes as a mask.
#[inline(always)]
pub(super) fn first_lanes(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// Bits `pos..pos + n` (`n ≤ 32`) of a bit row (bit `j % 8` of byte `j / 8` is element `j`,
/// [`super::fused::Bits`]' layout) as the low bits of the result; bits past the row read as 0.
#[inline(always)]
pub(super) fn bits_at(row: &[u8], pos: usize, n: usize) -> u32 {
    debug_assert!(n <= 32);
    let byte = pos / 8;
    let word = match row.get(byte..byte + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().unwrap()),
        None => {
            let mut w = [0u8; 8];
            let rest = row.get(byte..).unwrap_or(&[]);
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
    };
    (word >> (pos % 8)) as u32 & first_lanes(n)
}

/// Replaces one LIF output plane `o` by its gradient: `dy` routed to each window's maximum,
/// as [`pool::max_backward`] does after [`pool::max_forward`]. With `spike_values` (every
/// element `+0.0` or the same `s > 0`) 2×2 windows take [`route_2x2`].
pub(super) fn route(
    g: &PoolGeom,
    o: &mut [f32],
    dy: &[f32],
    spike_values: bool,
    (argmax, pooled): (&mut [u32], &mut [f32]),
) {
    if spike_values && is_2x2(g) {
        route_2x2(g, o, dy);
        return;
    }
    pool::max_plane(g, o, pooled, Some(argmax));
    // max_backward's arithmetic: a zeroed plane, then `+=` (so −0.0 becomes +0.0 as there).
    o.fill(0.0);
    for (&d, &a) in dy.iter().zip(argmax.iter()) {
        o[a as usize] += d;
    }
}

/// True for 2×2 windows at stride 2 without padding.
pub(super) fn is_2x2(g: &PoolGeom) -> bool {
    g.k == 2 && g.stride == 2 && g.pad == 0
}

/// [`route`] for 2×2 windows, stride 2, of spike values `o`.
fn route_2x2(g: &PoolGeom, o: &mut [f32], dy: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::pool2x2::applies(g) {
        // SAFETY: `applies` checked AVX-512F and the geometry; lengths are asserted inside.
        return unsafe { super::pool2x2::route(g, o, dy) };
    }
    route_2x2_portable(g, o, dy)
}

/// [`route_2x2`] without AVX-512 (the reference its AVX-512 kernel matches).
pub(super) fn route_2x2_portable(g: &PoolGeom, o: &mut [f32], dy: &[f32]) {
    let w = g.w;
    for (oy, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        let (r0, r1) = o[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
        let (p0, p1) = (&mut r0[..2 * g.ow], &mut r1[..2 * g.ow]);
        match (
            bytemuck::try_cast_slice_mut::<f32, u64>(p0),
            bytemuck::try_cast_slice_mut::<f32, u64>(p1),
        ) {
            (Ok(p0), Ok(p1)) => route_pairs(p0, p1, dy_row),
            _ => {
                for (ox, &d) in dy_row.iter().enumerate() {
                    let [a, b] = [r0[2 * ox], r0[2 * ox + 1]].map(f32::to_bits);
                    let [c, e] = [r1[2 * ox], r1[2 * ox + 1]].map(f32::to_bits);
                    let pack = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
                    let (mut w0, mut w1) = (pack(a, b), pack(c, e));
                    route_pairs(
                        std::slice::from_mut(&mut w0),
                        std::slice::from_mut(&mut w1),
                        &[d],
                    );
                    r0[2 * ox] = f32::from_bits(w0 as u32);
                    r0[2 * ox + 1] = f32::from_bits((w0 >> 32) as u32);
                    r1[2 * ox] = f32::from_bits(w1 as u32);
                    r1[2 * ox + 1] = f32::from_bits((w1 >> 32) as u32);
                }
            }
        }
        // A trailing column in no window gets no gradient; likewise a trailing row below.
        r0[2 * g.ow..].fill(0.0);
        r1[2 * g.ow..].fill(0.0);
    }
    o[2 * g.oh * w..].fill(0.0);
}

/// The windows of one output row as bit pairs: `top[k]` holds elements `(2k, 2k + 1)` of the
/// upper input row (first in the low half), `bottom[k]` those of the lower one. Spike values
/// are nonzero exactly when their bits are, so the selection is integer logic that vectorizes.
#[inline(always)]
fn route_pairs(top: &mut [u64], bottom: &mut [u64], dy: &[f32]) {
    const LO: u64 = 0xFFFF_FFFF;
    let set = |x: u64| ((x != 0) as u64).wrapping_neg();
    for ((t, b), &d) in top.iter_mut().zip(bottom.iter_mut()).zip(dy) {
        let (a, bb, c, e) = (set(*t & LO), set(*t >> 32), set(*b & LO), set(*b >> 32));
        let bits = (0.0 + d).to_bits() as u64;
        let both = bits | bits << 32;
        let first = a | !(bb | c | e);
        let (second, third, fourth) = (!a & bb, !a & !bb & c, !a & !bb & !c & e);
        *t = both & ((first & LO) | (second & !LO));
        *b = both & ((third & LO) | (fourth & !LO));
    }
}

/// [`route_2x2`] from the plane's spike bits instead of its values: bit `bit0 + i` of `spikes`
/// is element `i` of the plane; `o` (`h·w` elements, contents ignored) receives the gradient.
/// Same bits as [`route_2x2`] on the plane's spike values.
pub(super) fn route_2x2_bits(g: &PoolGeom, o: &mut [f32], dy: &[f32], spikes: &[u8], bit0: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::pool2x2::applies(g) {
        // SAFETY: `applies` checked AVX-512F and the geometry; lengths are asserted inside.
        return unsafe { super::pool2x2::route_bits(g, o, dy, spikes, bit0) };
    }
    route_2x2_bits_portable(g, o, dy, spikes, bit0)
}

/// [`route_2x2_bits`] without AVX-512, for planes of any width: 16 windows (32 lanes) of a row
/// pair at a time.
pub(super) fn route_2x2_bits_portable(
    g: &PoolGeom,
    o: &mut [f32],
    dy: &[f32],
    spikes: &[u8],
    bit0: usize,
) {
    assert!(o.len() >= g.h * g.w && dy.len() >= g.oh * g.ow);
    let w = g.w;
    for (oy, dy_row) in dy[..g.oh * g.ow].chunks_exact(g.ow).enumerate() {
        let (r0, r1) = o[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
        for (k, dy) in dy_row.chunks(16).enumerate() {
            let x0 = 32 * k;
            let n = 2 * dy.len();
            let at = |row: usize| bits_at(spikes, bit0 + row * w + x0, n);
            let (top, bottom) = selected(at(2 * oy), at(2 * oy + 1), first_lanes(n));
            for (row, sel) in [(&mut r0[x0..x0 + n], top), (&mut r1[x0..x0 + n], bottom)] {
                for (i, v) in row.iter_mut().enumerate() {
                    *v = if sel >> i & 1 == 1 {
                        0.0 + dy[i / 2]
                    } else {
                        0.0
                    };
                }
            }
        }
        r0[2 * g.ow..].fill(0.0);
        r1[2 * g.ow..].fill(0.0);
    }
    o[2 * g.oh * w..g.h * w].fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::super::planes::{max_pool_bits_portable, max_pool_spikes_portable};
    use super::*;

    /// `bits_at` against a bit-by-bit read, at every offset and length, up to the row's end.
    #[test]
    fn bits_at_reads_any_span() {
        let row: Vec<u8> = (0..13u32).map(|i| (i * 97 + 31) as u8).collect();
        let bit = |j: usize| row.get(j / 8).map_or(0, |b| (b >> (j % 8)) as u32 & 1);
        for pos in 0..row.len() * 8 {
            for n in 0..=32 {
                let want = (0..n).fold(0u32, |acc, i| acc | bit(pos + i) << i);
                assert_eq!(bits_at(&row, pos, n), want, "pos {pos} n {n}");
            }
        }
    }

    /// The bit-row routing gives the value routing's bits, and the bit-row pooling the value
    /// pooling's (portable all), on every width up to 70 (odd ones with a column in no window,
    /// wider than the AVX-512 kernels' 32), odd and even heights, at a bit offset inside a
    /// byte, spike densities from none to all, and gradients with `−0.0`.
    #[test]
    fn pooling_and_routing_from_bits_match_them_from_values() {
        let mut seed = 11u32;
        let mut next = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            seed >> 8
        };
        for w in 2..=70 {
            for h in [2, 3, 5, 8] {
                for density in [0u32, 30, 100] {
                    let g = PoolGeom::new(1, h, w, 2, 2, 0).unwrap();
                    let bit0 = (next() % 16) as usize;
                    let fired: Vec<bool> = (0..h * w).map(|_| next() % 100 < density).collect();
                    let o: Vec<f32> = fired.iter().map(|&f| if f { 0.5 } else { 0.0 }).collect();
                    let mut spikes = vec![0u8; (bit0 + h * w).div_ceil(8)];
                    for (i, _) in fired.iter().enumerate().filter(|(_, &f)| f) {
                        spikes[(bit0 + i) / 8] |= 1 << ((bit0 + i) % 8);
                    }
                    let dy: Vec<f32> = (0..g.oh * g.ow)
                        .map(|i| match i % 5 {
                            0 => -0.0,
                            _ => next() as f32 / (1 << 24) as f32 - 0.5,
                        })
                        .collect();
                    let mut want = o.clone();
                    route_2x2_portable(&g, &mut want, &dy);
                    let mut got = vec![f32::NAN; o.len()];
                    route_2x2_bits_portable(&g, &mut got, &dy, &spikes, bit0);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{h}x{w} d{density} bit0 {bit0}");
                    let mut want = vec![f32::NAN; dy.len()];
                    max_pool_spikes_portable(&g, &o, &mut want);
                    let mut got = vec![f32::NAN; dy.len()];
                    max_pool_bits_portable(&g, &spikes, bit0, 0.5, &mut got);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "pool {h}x{w} d{density} bit0 {bit0}"
                    );
                }
            }
        }
    }
}
