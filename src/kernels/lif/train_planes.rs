//! The training counterpart of [`super::planes`]: (batch-norm affine) → (repeat) → LIF over T
//! → max pool as one forward pass that keeps nothing, and one backward pass that rebuilds what
//! it needs from the input: pool backward → LIF backward through time → (sum over T). The
//! affine (a training batch norm's coefficients, given its batch statistics) is applied to a
//! task's planes in L2, so the normalized activation is never written out; its gradient is the
//! batch norm layer's business, from the `∂L/∂(affine output)` this returns and, if asked, the
//! batch norm's per-plane backward sums, taken while each gradient plane is in cache.
//!
//! Why: run layer by layer, a training step streams every stage's full `[T·B, C, H, W]`
//! activation several times (the repeat copy, the LIF forward and its recompute in backward,
//! the pool's argmax, the zero-filled pool gradient, the LIF gradient and its sum over T). On
//! `mnist-cnn`'s stem that is about twelve 25.7 MB passes per step. Here a task holds one
//! [`CHUNK`] of neurons for all T steps in L2; only the (un-repeated) input is read and the
//! pooled output, or the input gradient, written.
//!
//! Tasks are exactly the unfused kernel's chunks (neurons `[c·CHUNK, (c+1)·CHUNK)` of a step),
//! widened to whole planes where pooling needs a window's neighbours; a task writes the output
//! (forward) or input-gradient (backward) planes that start inside its chunk. The LIF sums (spike
//! counts, Σ `U[T]`, g_θ, g_decay) come from the unfused kernel's chunk functions
//! ([`fused::forward_chunk_from`], reading the input in place, and [`fused::backward_chunk`])
//! on the very same chunk slices, and every element passes through
//! the same step functions, so outputs, gradients and sums are bit-identical to the layer
//! chain ([`super::forward_train`], [`crate::kernels::pool::max_forward`] with argmax,
//! [`crate::kernels::pool::max_backward`], [`super::backward`],
//! [`crate::kernels::elementwise::par_sum_tiles`]); the tests check it.

use super::fused::{self, Bits, Format, InputAffine, Recompute};
use super::planes::{max_pool_bits, max_pool_spikes};
use super::route::{is_2x2, route, route_2x2_bits};
use super::{chunk_count, sum_over_chunks, BackwardSums, ForwardSums, PlaneStages, CHUNK};
use crate::kernels::bn;
use crate::kernels::conv::stem_linear::{PlaneTaps, TapScratch};
use crate::kernels::elementwise::{add_assign, prefetch};
use crate::neuron::step::StepParams;
use rayon::prelude::*;
use std::cell::RefCell;

/// One thread's buffers, grown to the largest task seen and reused.
#[derive(Default)]
struct Scratch {
    /// LIF output, then its gradient: `T` rows of a task's neurons.
    io: Vec<f32>,
    /// The pre-spike membrane M, `T` rows (backward only).
    membrane: Vec<f32>,
    /// The spike bits, `T` rows (backward only, for the 2×2 routing).
    bits: Vec<u8>,
    /// Argmax of one output plane.
    argmax: Vec<u32>,
    /// One pooled plane (the generic argmax path writes it).
    pooled: Vec<f32>,
    /// One gradient plane, where `dx` is not written ([`backward_train_planes_to_stem`]).
    plane: Vec<f32>,
    /// The stem's padded image and rows ([`backward_train_planes_to_stem`]).
    taps: TapScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

fn grow<E: Copy + Default>(v: &mut Vec<E>, len: usize) -> &mut [E] {
    if v.len() < len {
        v.resize(len, E::default());
    }
    &mut v[..len]
}

/// `[lo, hi)`: the neurons (of one step) of chunk `c` out of `n`.
fn chunk_span(c: usize, n: usize) -> (usize, usize) {
    ((c * CHUNK).min(n), ((c + 1) * CHUNK).min(n))
}

fn check(stages: &PlaneStages, t: usize, input: usize, output: usize) {
    stages.check(t, input, output);
    assert!(
        stages.addend.is_none(),
        "lif train planes: the residual addition runs as its own layer in training"
    );
}

/// The LIF input of neurons `[lo, hi)` at every step: `T` rows, all the same slice if the
/// input is repeated.
fn input_rows<'a>(
    stages: &PlaneStages,
    t: usize,
    input: &'a [f32],
    lo: usize,
    hi: usize,
) -> Vec<&'a [f32]> {
    let n = stages.planes * stages.plane_len();
    (0..t)
        .map(|s| {
            let base = if stages.repeated { 0 } else { s * n };
            &input[base + lo..base + hi]
        })
        .collect()
}

/// The LIF input of neurons `[lo, hi)` and `stages.affine`, if set (a training batch norm's
/// coefficients), for the kernel to apply as it loads the rows ([`fused::InputAffine`], with
/// `bn::normalize`'s bits; a repeated input is normalized once per vector for all steps).
/// Normalized in registers, no copy: a repeated input's planes once went through an L2
/// buffer, 1.4 % of a `mnist-cnn` training step on a Zen 4; in registers the kernels' share
/// grew by about as much (same step share in all, one profile each), so this saves a scratch
/// buffer and code, not time.
fn source_rows<'a>(
    stages: &'a PlaneStages,
    t: usize,
    input: &'a [f32],
    lo: usize,
    hi: usize,
) -> (Vec<&'a [f32]>, Option<InputAffine<'a>>) {
    let affine = stages.affine.as_ref().map(|a| InputAffine {
        mean: a.mean,
        scale: a.scale,
        shift: a.shift,
        plane: stages.plane_len(),
        first: lo,
    });
    (input_rows(stages, t, input, lo, hi), affine)
}

/// Splits every row of `rows` at `at`.
fn split_at<E>(rows: Vec<&mut [E]>, at: usize) -> (Vec<&mut [E]>, Vec<&mut [E]>) {
    rows.into_iter().map(|r| r.split_at_mut(at)).unzip()
}

/// Training forward of a LIF layer fused with a batch-norm affine and a repeat before it and a
/// max pool after it (per `stages`): `input` per [`PlaneStages::repeated`], `out`
/// `[T·B, C, OH, OW]` (overwritten). Nothing is kept: [`backward_train_planes`] rebuilds it.
/// Outputs and sums are bit-identical to [`super::forward_train`] and the unfused pool.
///
/// # Panics
/// If a length disagrees with `stages` and `timesteps`, or `stages.addend` is set.
pub fn forward_train_planes(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: &[f32],
    out: &mut [f32],
) -> ForwardSums {
    check(stages, timesteps, input.len(), out.len());
    let (t, hw, ohw) = (timesteps, stages.plane_len(), stages.out_plane_len());
    let n = stages.planes * hw;
    if n == 0 {
        return ForwardSums::default();
    }
    let chunks = chunk_count(n);
    // Chunk c writes the output planes that start inside it.
    let first_owned = |c: usize| chunk_span(c, n).0.div_ceil(hw);
    let widths: Vec<usize> = (0..chunks)
        .map(|c| (first_owned(c + 1).max(first_owned(c)) - first_owned(c)) * ohw)
        .collect();
    let mut out_rows = split_rows_by(out, t, stages.planes * ohw, &widths);
    // With a positive scale a window of spike values pools to the scale exactly when one of
    // its bits is set.
    let bit_pool = p.out_scale > 0.0 && stages.pool.as_ref().is_some_and(is_2x2);
    let body = |(c, out_rows): (usize, &mut [&mut [f32]])| {
        SCRATCH.with(|cell| {
            let s = &mut *cell.borrow_mut();
            let (lo, hi) = chunk_span(c, n);
            let (p_lo, p_hi) = (lo.div_ceil(hw), hi.div_ceil(hw));
            // Through the end of the last owned plane (a chunk inside one big plane owns none).
            let end = if p_hi > p_lo { (p_hi * hw).max(hi) } else { hi };
            let len = end - lo;
            let (src, affine) = source_rows(stages, t, input, lo, end);
            let (src_own, src_rest): (Vec<&[f32]>, Vec<&[f32]>) =
                src.iter().map(|r| r.split_at(hi - lo)).unzip();
            let affine_rest = affine.as_ref().map(|a| InputAffine { first: hi, ..*a });
            if bit_pool {
                // Only the spike bits are kept, and the pool reads those: the values are
                // never written.
                let row_bytes = Bits::row_bytes(len);
                let bits = grow(&mut s.bits, t * row_bytes);
                let rows: Vec<&mut [u8]> = bits.chunks_exact_mut(row_bytes).collect();
                // Where a rest follows, `hi − lo` is CHUNK, a multiple of 8: its bits start
                // on a byte.
                debug_assert!(end == hi || (hi - lo) % 8 == 0);
                let (mut own, mut rest) = split_at(rows, Bits::row_bytes(hi - lo));
                let sums =
                    fused::forward_chunk_spikes::<Bits>(p, u0, &src_own, affine.as_ref(), &mut own);
                if end > hi {
                    // The rest of the last plane: the next chunk counts it.
                    let affine_rest = affine_rest.as_ref();
                    fused::forward_chunk_spikes::<Bits>(p, u0, &src_rest, affine_rest, &mut rest);
                }
                let g = stages.pool.as_ref().expect("bit pooling has a pool");
                for (step, dst) in out_rows.iter_mut().enumerate() {
                    let spikes = &s.bits[step * row_bytes..][..row_bytes];
                    for plane in p_lo..p_hi {
                        let y = &mut dst[(plane - p_lo) * ohw..][..ohw];
                        max_pool_bits(g, spikes, plane * hw - lo, p.out_scale, y);
                    }
                }
                return sums;
            }
            let io = grow(&mut s.io, t * len);
            let rows: Vec<&mut [f32]> = io.chunks_exact_mut(len).collect();
            let (mut own, mut rest) = split_at(rows, hi - lo);
            let mut none: Vec<&mut [f32]> = (0..t).map(|_| <&mut [f32]>::default()).collect();
            let mut no_bits: Vec<&mut [u8]> = (0..t).map(|_| <&mut [u8]>::default()).collect();
            let sums = fused::forward_chunk_affine::<Recompute, false, true>(
                p,
                u0,
                Some(&src_own),
                affine.as_ref(),
                &mut own,
                &mut none,
                &mut no_bits,
            );
            if end > hi {
                // The rest of the last plane: the next chunk counts it.
                let src_rest = Some(&src_rest[..]);
                fused::forward_chunk_affine::<Recompute, false, true>(
                    p,
                    u0,
                    src_rest,
                    affine_rest.as_ref(),
                    &mut rest,
                    &mut none,
                    &mut no_bits,
                );
            }
            let io = &s.io[..t * len];
            for plane in p_lo..p_hi {
                let off = plane * hw - lo;
                for (step, dst) in out_rows.iter_mut().enumerate() {
                    let o = &io[step * len + off..][..hw];
                    let y = &mut dst[(plane - p_lo) * ohw..][..ohw];
                    match &stages.pool {
                        Some(g) => max_pool_spikes(g, o, y),
                        None => y.copy_from_slice(o),
                    }
                }
            }
            sums
        })
    };
    sum_over_chunks(&mut out_rows, t, ForwardSums::add, body)
}

/// Backward of [`forward_train_planes`] (same `p`, `u0`, `stages` and `input`): `grad_out`
/// `∂L/∂out` `[T·B, C, OH, OW]`; `dx` (overwritten) gets the gradient with respect to the
/// LIF's input (after the affine, if any) — summed over the steps if the input was repeated.
/// Gradients and sums are bit-identical to the unfused chain.
///
/// `bn_sums`, if given (it needs `stages.affine`, a training batch norm's), gets the batch
/// norm's backward sums of every plane of `dx` ([`bn::plane_grad_sums`] of the plane and its
/// input plane), computed while the plane is in cache: the batch norm then skips its own pass
/// over `dx` and its input ([`bn::backward_from_plane_sums`]).
///
/// # Panics
/// If a length disagrees with `stages` and `timesteps`, `stages.addend` is set, or `bn_sums`
/// is given without `stages.affine`.
#[allow(clippy::too_many_arguments)]
pub fn backward_train_planes(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: &[f32],
    grad_out: &[f32],
    dx: &mut [f32],
    bn_sums: Option<&mut [(f64, f64)]>,
) -> BackwardSums {
    assert_eq!(dx.len(), input.len(), "lif train planes: dx length");
    let out = GradOut::Dense(dx);
    backward(p, u0, timesteps, stages, input, grad_out, out, bn_sums)
}

/// [`backward_train_planes`] for a neuron whose training batch norm follows a one-channel 3×3
/// stem conv ([`crate::kernels::conv::stem_linear`]): instead of writing `dx`, each plane's
/// [`PlaneTaps`] against the conv's input `images` (`[N, 1, H, W]`: plane `k` of `input`
/// belongs to image `k / C`) go to `taps` (one per plane of `input`, in plane order), taken,
/// like the batch norm's sums (`bn_sums`, required here), while the plane is in L1. The sums
/// returned and `bn_sums` are the bits [`backward_train_planes`] gives.
///
/// # Panics
/// As [`backward_train_planes`]; if `stages.affine` is not set, or `images` or `taps` do not
/// match `input`.
#[allow(clippy::too_many_arguments)]
pub fn backward_train_planes_to_stem(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: &[f32],
    grad_out: &[f32],
    bn_sums: &mut [(f64, f64)],
    images: &[f32],
    taps: &mut [PlaneTaps],
) -> BackwardSums {
    let hw = stages.plane_len();
    assert!(
        taps.len() * hw == input.len() && images.len() * stages.channels == input.len(),
        "lif train planes: stem images or taps do not match the input"
    );
    let out = GradOut::StemTaps { images, taps };
    backward(
        p,
        u0,
        timesteps,
        stages,
        input,
        grad_out,
        out,
        Some(bn_sums),
    )
}

/// Where the backward puts the gradient with respect to the neuron's input.
enum GradOut<'a> {
    /// Written to `dx`.
    Dense(&'a mut [f32]),
    /// Not written: each plane's [`PlaneTaps`] against its image.
    StemTaps {
        images: &'a [f32],
        taps: &'a mut [PlaneTaps],
    },
}

/// A task's share of one row of a [`GradOut`]: its owned planes.
enum OwnedPlanes<'a> {
    Dense(&'a mut [f32]),
    Taps(&'a mut [PlaneTaps]),
}

#[allow(clippy::too_many_arguments)]
fn backward(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: &[f32],
    grad_out: &[f32],
    out: GradOut,
    bn_sums: Option<&mut [(f64, f64)]>,
) -> BackwardSums {
    check(stages, timesteps, input.len(), grad_out.len());
    let (t, hw, ohw) = (timesteps, stages.plane_len(), stages.out_plane_len());
    let n = stages.planes * hw;
    // dx's rows: one if the input was repeated, else one per step.
    let rows = if stages.repeated { 1 } else { t };
    let mean = bn_sums.as_ref().map(|sums| {
        assert_eq!(
            sums.len(),
            rows * stages.planes,
            "lif train planes: bn sums length"
        );
        let affine = stages.affine.as_ref();
        affine
            .expect("lif train planes: batch-norm sums need the batch norm's affine")
            .mean
    });
    if n == 0 {
        return BackwardSums::default();
    }
    let chunks = chunk_count(n);
    // Chunk c writes dx for the planes that start inside it, as the forward writes its output
    // planes: whole planes, so their batch-norm sums can be taken at once.
    let first_owned = |c: usize| chunk_span(c, n).0.div_ceil(hw);
    let owned: Vec<usize> = (0..chunks)
        .map(|c| first_owned(c + 1) - first_owned(c))
        .collect();
    let (mut out_rows, images): (Vec<OwnedPlanes>, &[f32]) = match out {
        GradOut::Dense(dx) => {
            let widths: Vec<usize> = owned.iter().map(|k| k * hw).collect();
            let rows = split_rows_by(dx, rows, n, &widths);
            (rows.into_iter().map(OwnedPlanes::Dense).collect(), &[])
        }
        GradOut::StemTaps { images, taps } => {
            let rows = split_rows_by(taps, rows, stages.planes, &owned);
            (rows.into_iter().map(OwnedPlanes::Taps).collect(), images)
        }
    };
    let mut sum_rows = match bn_sums {
        Some(sums) => split_rows_by(sums, rows, stages.planes, &owned),
        None => (0..chunks * rows).map(|_| Default::default()).collect(),
    };
    // Spike outputs are +0.0 or the scale; with a positive (or +0.0) scale a value is zero
    // exactly when its bits are.
    let spike_values = p.out_scale > 0.0 || p.out_scale.to_bits() == 0;
    // With a positive scale a value is nonzero exactly when its spike bit is set.
    let bit_routing = p.out_scale > 0.0 && stages.pool.as_ref().is_some_and(is_2x2);
    type Rows<'a, 'b, E> = &'a mut [&'b mut [E]];
    let body = |c: usize, out_rows: &mut [OwnedPlanes], sum_rows: Rows<(f64, f64)>| {
        SCRATCH.with(|cell| {
            let s = &mut *cell.borrow_mut();
            let (lo, hi) = chunk_span(c, n);
            // Whole planes around the chunk: every window touching it; the owned ones end
            // there too.
            let (p0, p1) = (lo / hw, hi.div_ceil(hw));
            let p_own = lo.div_ceil(hw);
            // The gradient rows are read only after the rebuild below: fetched now, they
            // arrive meanwhile (criterion `train_planes/stem_fused`, alternating: −9 % at 1
            // thread, −15 % at 2).
            for step in 0..t {
                prefetch(&grad_out[(step * stages.planes + p0) * ohw..][..(p1 - p0) * ohw]);
            }
            let (start, len) = (p0 * hw, (p1 - p0) * hw);
            let (src, affine) = source_rows(stages, t, input, start, start + len);
            let io = grow(&mut s.io, t * len);
            let membrane = grow(&mut s.membrane, t * len);
            let mut io_rows: Vec<&mut [f32]> = io.chunks_exact_mut(len).collect();
            let mut m_rows: Vec<&mut [f32]> = membrane.chunks_exact_mut(len).collect();
            // Pool backward: each step's output plane becomes its gradient.
            let dy_plane = |step: usize, plane: usize| {
                &grad_out[(step * stages.planes + plane) * ohw..][..ohw]
            };
            match &stages.pool {
                Some(g) if bit_routing => {
                    // The rebuild stores spike bits instead of the outputs, and the routing
                    // reads those: a 32nd of the bytes.
                    let row_bytes = Bits::row_bytes(len);
                    let bits = grow(&mut s.bits, t * row_bytes);
                    let mut bit_rows: Vec<&mut [u8]> = bits.chunks_exact_mut(row_bytes).collect();
                    let mut no_out: Vec<&mut [f32]> =
                        (0..t).map(|_| <&mut [f32]>::default()).collect();
                    fused::forward_chunk_affine::<Bits, true, false>(
                        p,
                        u0,
                        Some(&src),
                        affine.as_ref(),
                        &mut no_out,
                        &mut m_rows,
                        &mut bit_rows,
                    );
                    for (step, (row, spikes)) in io_rows.iter_mut().zip(&bit_rows).enumerate() {
                        for plane in p0..p1 {
                            let k = plane - p0;
                            let o = &mut row[k * hw..][..hw];
                            route_2x2_bits(g, o, dy_plane(step, plane), spikes, k * hw);
                        }
                    }
                }
                pool => {
                    let mut no_bits: Vec<&mut [u8]> =
                        (0..t).map(|_| <&mut [u8]>::default()).collect();
                    fused::forward_chunk_affine::<Recompute, true, true>(
                        p,
                        u0,
                        Some(&src),
                        affine.as_ref(),
                        &mut io_rows,
                        &mut m_rows,
                        &mut no_bits,
                    );
                    for (step, row) in io_rows.iter_mut().enumerate() {
                        for plane in p0..p1 {
                            let o = &mut row[(plane - p0) * hw..][..hw];
                            let dy = dy_plane(step, plane);
                            match pool {
                                Some(g) => route(
                                    g,
                                    o,
                                    dy,
                                    spike_values,
                                    s_argmax(&mut s.argmax, &mut s.pooled, ohw),
                                ),
                                None => o.copy_from_slice(dy),
                            }
                        }
                    }
                }
            }
            let no_bits: Vec<&[u8]> = vec![&[]; t];
            let mut lif_backward = |from: usize, to: usize| {
                let m: Vec<&[f32]> = m_rows.iter().map(|r| &r[from..to]).collect();
                let mut g: Vec<&mut [f32]> = io_rows.iter_mut().map(|r| &mut r[from..to]).collect();
                fused::backward_chunk::<Recompute>(p, u0, &m, &no_bits, &mut g, None)
            };
            // The chunk's own neurons give the sums, in the unfused chunks' order.
            let sums = lif_backward(lo - start, hi - start);
            if p1 > p_own && hi < p1 * hw {
                // The rest of the last owned plane: the next chunk counts it.
                lif_backward(hi - start, len);
            }
            // dx plane by plane, each plane's batch-norm sums (and stem taps) taken while it
            // is in L1.
            let own = p_own * hw - start;
            let sum_plane = |dst: &mut [f32], at: usize, row: usize| {
                if stages.repeated {
                    // par_sum_tiles' order: step 0, then + step 1, + step 2, ...
                    dst.copy_from_slice(&io_rows[0][at..at + hw]);
                    for g in &io_rows[1..] {
                        add_assign(dst, &g[at..at + hw]);
                    }
                } else {
                    dst.copy_from_slice(&io_rows[row][at..at + hw]);
                }
            };
            // The batch norm's input plane and channel mean of owned plane k of a row.
            let bn_plane = |row: usize, k: usize| {
                let plane = p_own + k;
                let x = &input[(row * stages.planes + plane) * hw..][..hw];
                mean.map(|mean| (x, mean[plane % stages.channels]))
            };
            let mut loaded_image = None;
            for (row, (out, plane_sums)) in out_rows.iter_mut().zip(sum_rows.iter_mut()).enumerate()
            {
                match out {
                    OwnedPlanes::Dense(d) => {
                        for (k, dst) in d.chunks_exact_mut(hw).enumerate() {
                            sum_plane(dst, own + k * hw, row);
                            if let Some((x, m)) = bn_plane(row, k) {
                                plane_sums[k] = bn::plane_grad_sums(dst, x, m);
                            }
                        }
                    }
                    OwnedPlanes::Taps(taps) => {
                        let dst = grow(&mut s.plane, hw);
                        for (k, plane_taps) in taps.iter_mut().enumerate() {
                            sum_plane(dst, own + k * hw, row);
                            let (x, m) = bn_plane(row, k).expect("stem taps have the affine");
                            plane_sums[k] = bn::plane_grad_sums(dst, x, m);
                            let image = (row * stages.planes + p_own + k) / stages.channels;
                            if loaded_image != Some(image) {
                                let pixels = &images[image * hw..][..hw];
                                s.taps.load_image(pixels, stages.height, stages.width);
                                loaded_image = Some(image);
                            }
                            *plane_taps = s.taps.plane_taps(dst);
                        }
                    }
                }
            }
            sums
        })
    };
    let parts: Vec<BackwardSums> = out_rows
        .par_chunks_mut(rows)
        .zip(sum_rows.par_chunks_mut(rows))
        .enumerate()
        .map(|(c, (out_rows, sum_rows))| body(c, out_rows, sum_rows))
        .collect();
    parts
        .into_iter()
        .fold(BackwardSums::default(), BackwardSums::add)
}

fn s_argmax<'a>(
    argmax: &'a mut Vec<u32>,
    pooled: &'a mut Vec<f32>,
    ohw: usize,
) -> (&'a mut [u32], &'a mut [f32]) {
    (grow(argmax, ohw), grow(pooled, ohw))
}

/// Splits a `[rows, row_len]` buffer into consecutive pieces of the given `widths` per row:
/// entry `c·rows + t` is piece c of row t.
fn split_rows_by<'a, E>(
    mut buf: &'a mut [E],
    rows: usize,
    row_len: usize,
    widths: &[usize],
) -> Vec<&'a mut [E]> {
    debug_assert_eq!(widths.iter().sum::<usize>(), row_len);
    let chunks = widths.len();
    let mut out: Vec<&mut [E]> = (0..chunks * rows).map(|_| <&mut [E]>::default()).collect();
    for t in 0..rows {
        let (mut row, rest) = std::mem::take(&mut buf).split_at_mut(row_len);
        buf = rest;
        for (c, &w) in widths.iter().enumerate() {
            let (a, b) = std::mem::take(&mut row).split_at_mut(w);
            out[c * rows + t] = a;
            row = b;
        }
    }
    out
}

#[cfg(test)]
#[path = "train_planes_tests.rs"]
mod tests;
