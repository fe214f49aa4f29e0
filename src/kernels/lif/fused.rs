//! Chunk bodies of the fused LIF kernels: `f32x16` over neurons with the time loop inside, and
//! a scalar tail; plus the spike layouts of the tape.
//!
//! Why 16 lanes: the chunk bodies are bound by arithmetic, not memory (the L2-resident criterion
//! bench runs at ~12 cycles per 8-lane step), and this machine kind has full 512-bit datapaths.
//! Every element goes through the same step functions at either width, so only the blocked f32
//! partial sums (θ, decay, Σ U) change their rounding order with it.

use super::{BackwardSums, ForwardSums};
use crate::kernels::elementwise::prefetch_line;
use crate::neuron::step::{reset, step, step_backward, StepParams};
use crate::neuron::surrogate::{Reset, SurrogateKind, SurrogateShape};
use wide::{f32x16, f32x8, u32x16, u32x8};

use super::input_affine::AffineCursor;
pub(super) use super::input_affine::InputAffine;

/// Neurons per vector group of the chunk bodies.
pub(super) const LANES: usize = 16;

/// The chunk bodies' vector.
pub(super) type V = f32x16;

/// A spike layout: how `S[t]` for one chunk row is written by forward and read by backward.
/// Vector accessors take the index `v` of a 16-neuron group; scalar ones a neuron index `j`.
pub(super) trait Format: Sync {
    /// Bytes a row of `n` neurons takes (a multiple-of-8 `n` splits exactly).
    fn row_bytes(n: usize) -> usize;
    /// Stores the 16 spikes of group `v` (bit `i` = lane `i`).
    fn put16(row: &mut [u8], v: usize, bits: u16);
    /// The spikes of group `v` as a lane mask; `m`, `theta` are the group's M and θ.
    fn get16(row: &[u8], v: usize, m: V, theta: V) -> V;
    /// Prepares the row for scalar [`Format::put1`] calls from neuron `j0` (a multiple of 16).
    fn begin_tail(_row: &mut [u8], _j0: usize) {}
    /// Stores the spike of neuron `j`.
    fn put1(row: &mut [u8], j: usize, s: bool);
    /// The spike of neuron `j`, whose membrane is `m`.
    fn get1(row: &[u8], j: usize, m: f32, theta: f32) -> bool;
}

/// Spikes are not stored: S = 1[M ≥ θ] is recomputed from the cached M (the same comparison,
/// on the same f32 values, that the forward made).
pub(super) struct Recompute;

impl Format for Recompute {
    fn row_bytes(_n: usize) -> usize {
        0
    }
    #[inline(always)]
    fn put16(_row: &mut [u8], _v: usize, _bits: u16) {}
    #[inline(always)]
    fn get16(_row: &[u8], _v: usize, m: V, theta: V) -> V {
        m.simd_ge(theta)
    }
    #[inline(always)]
    fn put1(_row: &mut [u8], _j: usize, _s: bool) {}
    #[inline(always)]
    fn get1(_row: &[u8], _j: usize, m: f32, theta: f32) -> bool {
        m >= theta
    }
}

/// One bit per spike: bit `j % 8` of byte `j / 8` of a row is neuron `j` (so group `v` is bytes
/// `2v`, `2v + 1`, little-endian). The padding bits of a row's last byte are zero.
pub(super) struct Bits;

impl Format for Bits {
    fn row_bytes(n: usize) -> usize {
        n.div_ceil(8)
    }
    #[inline(always)]
    fn put16(row: &mut [u8], v: usize, bits: u16) {
        row[2 * v..2 * v + 2].copy_from_slice(&bits.to_le_bytes());
    }
    #[inline(always)]
    fn get16(row: &[u8], v: usize, _m: V, _theta: V) -> V {
        mask16(u16::from_le_bytes([row[2 * v], row[2 * v + 1]]))
    }
    fn begin_tail(row: &mut [u8], j0: usize) {
        row[j0 / 8..].fill(0);
    }
    #[inline(always)]
    fn put1(row: &mut [u8], j: usize, s: bool) {
        row[j / 8] |= (s as u8) << (j % 8);
    }
    #[inline(always)]
    fn get1(row: &[u8], j: usize, _m: f32, _theta: f32) -> bool {
        (row[j / 8] >> (j % 8)) & 1 == 1
    }
}

/// One byte (0 or 1) per spike.
pub(super) struct Bytes;

impl Format for Bytes {
    fn row_bytes(n: usize) -> usize {
        n
    }
    #[inline(always)]
    fn put16(row: &mut [u8], v: usize, bits: u16) {
        let dst: &mut [u8; LANES] = (&mut row[v * LANES..(v + 1) * LANES]).try_into().unwrap();
        for (i, d) in dst.iter_mut().enumerate() {
            *d = ((bits >> i) & 1) as u8;
        }
    }
    #[inline(always)]
    fn get16(row: &[u8], v: usize, _m: V, _theta: V) -> V {
        let b: [u8; LANES] = row[v * LANES..(v + 1) * LANES].try_into().unwrap();
        // 0 → 0x0000_0000, 1 → 0xFFFF_FFFF: the lane mask itself.
        V::from_bits(u32x16::new(b.map(|x| (x as u32).wrapping_neg())))
    }
    #[inline(always)]
    fn put1(row: &mut [u8], j: usize, s: bool) {
        row[j] = s as u8;
    }
    #[inline(always)]
    fn get1(row: &[u8], j: usize, _m: f32, _theta: f32) -> bool {
        row[j] == 1
    }
}

/// The 8-lane mask with lane `i` set iff bit `i` of `bits` is (the eval plane kernels).
#[inline(always)]
pub(super) fn mask_from_bits(bits: u8) -> f32x8 {
    const LANE_BIT: u32x8 = u32x8::new([1, 2, 4, 8, 16, 32, 64, 128]);
    let hit = (u32x8::splat(bits as u32) & LANE_BIT).simd_ne(u32x8::splat(0));
    f32x8::from_bits(hit)
}

/// The 16-lane mask with lane `i` set iff bit `i` of `bits` is.
#[inline(always)]
fn mask16(bits: u16) -> V {
    const LANE_BIT: u32x16 = u32x16::new([
        1,
        1 << 1,
        1 << 2,
        1 << 3,
        1 << 4,
        1 << 5,
        1 << 6,
        1 << 7,
        1 << 8,
        1 << 9,
        1 << 10,
        1 << 11,
        1 << 12,
        1 << 13,
        1 << 14,
        1 << 15,
    ]);
    let hit = (u32x16::splat(bits as u32) & LANE_BIT).simd_ne(u32x16::splat(0));
    V::from_bits(hit)
}

/// 8 values of `row` from `j` (the eval plane kernels).
#[inline(always)]
pub(super) fn load(row: &[f32], j: usize) -> f32x8 {
    f32x8::new(row[j..j + 8].try_into().unwrap())
}

/// Stores 8 values into `row` from `j` (the eval plane kernels).
#[inline(always)]
pub(super) fn store(row: &mut [f32], j: usize, v: f32x8) {
    row[j..j + 8].copy_from_slice(&v.to_array());
}

#[inline(always)]
fn load16(row: &[f32], j: usize) -> V {
    V::new(row[j..j + LANES].try_into().unwrap())
}

#[inline(always)]
fn store16(row: &mut [f32], j: usize, v: V) {
    row[j..j + LANES].copy_from_slice(&v.to_array());
}

/// How far ahead of its loads (in neurons, 16 groups) the forward asks for its input rows.
/// Why: a non-repeated input is `T` rows a whole step apart, read from DRAM or L3 by the
/// forward and again by the backward's rebuild, and `perf` put most of their time on these
/// loads. Criterion `train_planes/conv2_fused_affine` (2 threads, alternating): 5.7 → 4.5 ms
/// at 256 (512 and 1024 ahead: 4.7 and 4.8 ms); the stem (a repeated input in L2) unchanged.
const AHEAD: usize = 256;

/// Groups (of 16 neurons) whose partial sums are added in f32 before they go to the f64
/// accumulators: converting every group costs as much as a timestep; 8 terms per lane in f32
/// keep ~1e-7 relative precision per block.
const BLOCK: usize = 8;

#[inline(always)]
fn flush(acc: &mut [f64; LANES], block: V) {
    for (a, x) in acc.iter_mut().zip(block.to_array()) {
        *a += x as f64;
    }
}

/// Forward over one chunk: `io[t]` is row t of the chunk (I in, O out); with `TAPE`, `m[t]` and
/// `s[t]` receive M and the spikes. Every row has the same length; there is at least one row.
pub(super) fn forward_chunk<F: Format, const TAPE: bool>(
    p: &StepParams,
    u0: f32,
    io: &mut [&mut [f32]],
    m: &mut [&mut [f32]],
    s: &mut [&mut [u8]],
) -> ForwardSums {
    forward_chunk_from::<F, TAPE>(p, u0, None, io, m, s)
}

/// [`forward_chunk`] reading I from `src[t]` (if given, rows as long as `io`'s) instead of
/// `io[t]`, which then only receives O: a repeated input is one row referenced T times.
pub(super) fn forward_chunk_from<F: Format, const TAPE: bool>(
    p: &StepParams,
    u0: f32,
    src: Option<&[&[f32]]>,
    io: &mut [&mut [f32]],
    m: &mut [&mut [f32]],
    s: &mut [&mut [u8]],
) -> ForwardSums {
    forward_chunk_affine::<F, TAPE, true>(p, u0, src, None, io, m, s)
}

/// [`forward_chunk_from`] with `affine` (if given) applied to the input as it is loaded, and O
/// written to `io` only if `OUT` (a tape rebuild needs just M: `io` may then be empty rows,
/// and `src` is required).
pub(super) fn forward_chunk_affine<F: Format, const TAPE: bool, const OUT: bool>(
    p: &StepParams,
    u0: f32,
    src: Option<&[&[f32]]>,
    affine: Option<&InputAffine>,
    io: &mut [&mut [f32]],
    m: &mut [&mut [f32]],
    s: &mut [&mut [u8]],
) -> ForwardSums {
    forward_specialized::<F, TAPE, TAPE, OUT>(p, u0, src, affine, io, m, s)
}

/// [`forward_chunk_affine`] that keeps only the spikes: `s[t]` receives S (one row per step)
/// and nothing else is written, for a consumer that needs no more (a max pool of spike
/// values, [`super::planes::max_pool_bits`]). The same sums and spikes as the full forward.
pub(super) fn forward_chunk_spikes<F: Format>(
    p: &StepParams,
    u0: f32,
    src: &[&[f32]],
    affine: Option<&InputAffine>,
    s: &mut [&mut [u8]],
) -> ForwardSums {
    let mut no_out: Vec<&mut [f32]> = s.iter().map(|_| <&mut [f32]>::default()).collect();
    let no_membrane = &mut [];
    forward_specialized::<F, true, false, false>(
        p,
        u0,
        Some(src),
        affine,
        &mut no_out,
        no_membrane,
        s,
    )
}

/// [`forward_body`] for `p`'s reset (the forward depends on the configuration only through
/// it); four steps (the paper's T) get a body with the time loop unrolled.
fn forward_specialized<F: Format, const TAPE: bool, const MEMBRANE: bool, const OUT: bool>(
    p: &StepParams,
    u0: f32,
    src: Option<&[&[f32]]>,
    affine: Option<&InputAffine>,
    io: &mut [&mut [f32]],
    m: &mut [&mut [f32]],
    s: &mut [&mut [u8]],
) -> ForwardSums {
    let (k, sh) = (p.surrogate.kind(), p.surrogate.shape());
    macro_rules! body {
        ($r:ident) => {{
            let q = p.specialized(k, sh, Reset::$r);
            match io.len() {
                4 => forward_body::<F, TAPE, MEMBRANE, OUT, 4>(&q, u0, src, affine, io, m, s),
                _ => forward_body::<F, TAPE, MEMBRANE, OUT, 0>(&q, u0, src, affine, io, m, s),
            }
        }};
    }
    match p.reset {
        Reset::Soft => body!(Soft),
        Reset::Hard => body!(Hard),
    }
}

/// The forward over a chunk; `STEPS` is the step count if nonzero (a constant, so the time
/// loop unrolls and the rows' pointers stay in registers), else `io.len()`. With `TAPE` the
/// spikes go to `s`, and with `MEMBRANE` (which needs `TAPE`) M to `m`.
#[inline(always)]
fn forward_body<
    F: Format,
    const TAPE: bool,
    const MEMBRANE: bool,
    const OUT: bool,
    const STEPS: usize,
>(
    p: &StepParams,
    u0: f32,
    src: Option<&[&[f32]]>,
    affine: Option<&InputAffine>,
    io: &mut [&mut [f32]],
    m: &mut [&mut [f32]],
    s: &mut [&mut [u8]],
) -> ForwardSums {
    // `io` has a row per step (empty rows if !OUT); the rows' length comes from the input.
    let steps = if STEPS > 0 { STEPS } else { io.len() };
    assert_eq!(steps, io.len(), "lif forward: one io row per step");
    let len = src.map_or_else(|| io[0].len(), |r| r[0].len());
    if let Some(src) = src {
        assert!(src.len() >= steps && src.iter().all(|r| r.len() == len));
    }
    assert!(
        OUT || src.is_some(),
        "a forward without output reads a source"
    );
    assert!(!OUT || io.iter().all(|r| r.len() == len));
    let groups = len / LANES;
    let (mut spikes, mut active) = (0u64, 0u64);
    let mut lane_sum = [0f64; LANES];
    let mut cursor = affine.map(AffineCursor::new);
    let distinct_rows = src.is_some_and(|r| {
        r[..steps]
            .windows(2)
            .any(|w| w[0].as_ptr() != w[1].as_ptr())
    });
    for first in (0..groups).step_by(BLOCK) {
        let mut block = V::ZERO;
        for v in first..(first + BLOCK).min(groups) {
            let j = v * LANES;
            let mut u = V::splat(u0);
            let mut any = 0u32;
            let norm = cursor.as_mut().map(|c| c.at(j));
            let through_affine = |x: V| norm.map_or(x, |(mv, av, bv)| (x - mv).mul_add(av, bv));
            if let Some(src) = src {
                // A repeated input's rows are one row.
                let rows = if distinct_rows { steps } else { 1 };
                for row in &src[..rows] {
                    prefetch_line(row, j + AHEAD);
                }
            }
            // A repeated input is loaded and normalized once for all steps.
            let repeated = match src {
                Some(r) if !distinct_rows => Some(through_affine(load16(r[0], j))),
                _ => None,
            };
            for t in 0..steps {
                let i = repeated
                    .unwrap_or_else(|| through_affine(load16(src.map_or(&*io[t], |r| r[t]), j)));
                let out = step(p, u, i);
                if OUT {
                    store16(io[t], j, out.o);
                }
                let bits = out.s.to_bitmask();
                if MEMBRANE {
                    store16(m[t], j, out.m);
                }
                if TAPE {
                    F::put16(s[t], v, bits as u16);
                }
                spikes += bits.count_ones() as u64;
                any |= bits;
                u = out.u;
            }
            active += any.count_ones() as u64;
            block += mask16(any as u16) & u;
        }
        flush(&mut lane_sum, block);
    }
    let mut tail_sum = 0f64;
    let j0 = groups * LANES;
    if TAPE && j0 < len {
        for row in s.iter_mut() {
            F::begin_tail(row, j0);
        }
    }
    for j in j0..len {
        let (mut u, mut any) = (u0, false);
        for t in 0..steps {
            // Not `map_or(io[t][j], ..)`: without OUT the `io` rows are empty.
            let x = match src {
                Some(r) => r[t][j],
                None => io[t][j],
            };
            let i = affine.map_or(x, |a| {
                let c = a.channel(j);
                (x - a.mean[c]).mul_add(a.scale[c], a.shift[c])
            });
            let out = step(p, u, i);
            if OUT {
                io[t][j] = out.o;
            }
            if MEMBRANE {
                m[t][j] = out.m;
            }
            if TAPE {
                F::put1(s[t], j, out.s);
            }
            spikes += out.s as u64;
            any |= out.s;
            u = out.u;
        }
        if any {
            active += 1;
            tail_sum += u as f64;
        }
    }
    ForwardSums {
        spikes,
        active,
        sum_u_active: lane_sum.iter().sum::<f64>() + tail_sum,
    }
}

/// Backward over one chunk: `m[t]`, `s[t]` are the chunk's tape rows, `g[t]` holds `∂L/∂O[t]` on
/// entry and `∂L/∂I[t]` on return; `g_u_last` is the chunk's `∂L/∂U[T]`, if any.
pub(super) fn backward_chunk<F: Format>(
    p: &StepParams,
    u0: f32,
    m: &[&[f32]],
    s: &[&[u8]],
    g: &mut [&mut [f32]],
    g_u_last: Option<&[f32]>,
) -> BackwardSums {
    // One monomorphic loop per configuration: inside each arm the family, shape and reset are
    // constants, so the per-element dispatch in the step functions folds away. Together with
    // the blocked sums and mask-AND selects this made the L2-resident TrSG backward 1.7×
    // faster (CPU time, 1 thread). Four steps (the paper's T) unroll the time loop.
    macro_rules! specialized {
        ($(($k:ident, $s:ident, $r:ident)),* $(,)?) => {
            match (p.surrogate.kind(), p.surrogate.shape(), p.reset) {
                $((SurrogateKind::$k, SurrogateShape::$s, Reset::$r) => {
                    let q = p.specialized(SurrogateKind::$k, SurrogateShape::$s, Reset::$r);
                    match g.len() {
                        4 => backward_body::<F, 4>(&q, u0, m, s, g, g_u_last),
                        _ => backward_body::<F, 0>(&q, u0, m, s, g, g_u_last),
                    }
                })*
            }
        };
    }
    specialized!(
        (As, Rect, Soft),
        (As, Rect, Hard),
        (As, Tri, Soft),
        (As, Tri, Hard),
        (As, Atan, Soft),
        (As, Atan, Hard),
        (As, Sigmoid, Soft),
        (As, Sigmoid, Hard),
        (Rs, Rect, Soft),
        (Rs, Rect, Hard),
        (Rs, Tri, Soft),
        (Rs, Tri, Hard),
        (Rs, Atan, Soft),
        (Rs, Atan, Hard),
        (Rs, Sigmoid, Soft),
        (Rs, Sigmoid, Hard),
        (Trsg, Rect, Soft),
        (Trsg, Rect, Hard),
        (Trsg, Tri, Soft),
        (Trsg, Tri, Hard),
        (Trsg, Atan, Soft),
        (Trsg, Atan, Hard),
        (Trsg, Sigmoid, Soft),
        (Trsg, Sigmoid, Hard),
    )
}

/// The backward over a chunk; `STEPS` as in [`forward_body`].
#[inline(always)]
fn backward_body<F: Format, const STEPS: usize>(
    p: &StepParams,
    u0: f32,
    m: &[&[f32]],
    s: &[&[u8]],
    g: &mut [&mut [f32]],
    g_u_last: Option<&[f32]>,
) -> BackwardSums {
    let steps = if STEPS > 0 { STEPS } else { g.len() };
    assert_eq!(steps, g.len(), "lif backward: one gradient row per step");
    let len = g[0].len();
    let groups = len / LANES;
    let theta = V::splat(p.theta);
    let (mut th_lanes, mut dec_lanes) = ([0f64; LANES], [0f64; LANES]);
    for first in (0..groups).step_by(BLOCK) {
        let (mut th_block, mut dec_block) = (V::ZERO, V::ZERO);
        for v in first..(first + BLOCK).min(groups) {
            let j = v * LANES;
            let mut g_u = g_u_last.map_or(V::ZERO, |gl| load16(gl, j));
            let (mut g_th, mut g_dec) = (V::ZERO, V::ZERO);
            let mut m_t = load16(m[steps - 1], j);
            let mut s_t = F::get16(s[steps - 1], v, m_t, theta);
            for t in (0..steps).rev() {
                let (m_p, s_p, u_p) = if t > 0 {
                    let m_p = load16(m[t - 1], j);
                    let s_p = F::get16(s[t - 1], v, m_p, theta);
                    (m_p, s_p, reset(p, m_p, s_p))
                } else {
                    (V::ZERO, V::ZERO, V::splat(u0))
                };
                let gr = step_backward(p, u_p, m_t, s_t, load16(g[t], j), g_u);
                store16(g[t], j, gr.g_i);
                g_th += gr.g_theta;
                g_dec += gr.g_decay;
                g_u = gr.g_u_prev;
                (m_t, s_t) = (m_p, s_p);
            }
            th_block += g_th;
            dec_block += g_dec;
        }
        flush(&mut th_lanes, th_block);
        flush(&mut dec_lanes, dec_block);
    }
    let (mut th_tail, mut dec_tail) = (0f64, 0f64);
    for j in groups * LANES..len {
        let mut g_u = g_u_last.map_or(0.0, |gl| gl[j]);
        let (mut g_th, mut g_dec) = (0f32, 0f32);
        for t in (0..steps).rev() {
            let (m_t, s_t) = (m[t][j], F::get1(s[t], j, m[t][j], p.theta));
            let u_p = if t > 0 {
                let m_p = m[t - 1][j];
                reset(p, m_p, F::get1(s[t - 1], j, m_p, p.theta))
            } else {
                u0
            };
            let gr = step_backward(p, u_p, m_t, s_t, g[t][j], g_u);
            g[t][j] = gr.g_i;
            g_th += gr.g_theta;
            g_dec += gr.g_decay;
            g_u = gr.g_u_prev;
        }
        th_tail += g_th as f64;
        dec_tail += g_dec as f64;
    }
    BackwardSums {
        g_theta: th_lanes.iter().sum::<f64>() + th_tail,
        g_decay: dec_lanes.iter().sum::<f64>() + dec_tail,
    }
}
