//! The plane-wise evaluation kernel: eval batch norm → (repeat) → LIF over T → max pool in one
//! pass per `H×W` plane, so the LIF input and output never exist as `[T·B, C, H, W]` arrays.
//!
//! The unfused chain writes and rereads every stage's full activation: on `mnist-cnn`'s stem
//! (B = 64, T = 4) the repeat copy, the in-place LIF and the pool each stream 25.7 MB, which
//! took ≈ 40 % of an inference step (docs/perf.md). Here a plane's state, input and output stay
//! in L1 for all T steps; only the (un-repeated) input is read and the pooled spikes written.
//!
//! Every stage performs the same IEEE operations as its unfused kernel
//! ([`bn::normalize_plane_inplace`], [`crate::neuron::step::step`], max pooling of values that
//! are never NaN), so the output is bit-identical to the chain; `tests.rs` checks it.

use super::fused::{load, mask_from_bits, store};
use super::ForwardSums;
use crate::kernels::bn;
use crate::kernels::pool::{self, PoolGeom};
use crate::neuron::step::{step, StepParams};
use crate::neuron::surrogate::Reset;
use rayon::prelude::*;
use wide::f32x8;

const LANES: usize = 8;

/// Input elements per parallel task (whole planes), so small planes are batched. Task
/// boundaries do not depend on the thread count, so neither do the results.
const MIN_TASK: usize = 16 * 1024;

/// Per-channel `(x − mean)·scale + shift`: a batch norm with frozen statistics.
#[derive(Clone, Copy, Debug)]
pub struct ChannelAffine<'a> {
    /// Per-channel mean.
    pub mean: &'a [f32],
    /// Per-channel `γ/√(var + ε)`.
    pub scale: &'a [f32],
    /// Per-channel `β`.
    pub shift: &'a [f32],
}

/// What [`forward_eval_planes`] does around the LIF step, and on what shape.
#[derive(Clone, Copy, Debug)]
pub struct PlaneStages<'a> {
    /// Planes per timestep, `B·C`.
    pub planes: usize,
    /// Channels `C`: plane `p` belongs to channel `p % C`.
    pub channels: usize,
    /// Plane height.
    pub height: usize,
    /// Plane width.
    pub width: usize,
    /// The input is one timestep `[B, C, H, W]` that every step reads (direct encoding's
    /// repeat); otherwise it is `[T·B, C, H, W]`.
    pub repeated: bool,
    /// Applied to the input first (an eval batch norm), if given.
    pub affine: Option<ChannelAffine<'a>>,
    /// Max pooling of each output plane, if given (its `planes`, `h`, `w` must be 1, `height`,
    /// `width`).
    pub pool: Option<PoolGeom>,
}

impl PlaneStages<'_> {
    pub(super) fn plane_len(&self) -> usize {
        self.height * self.width
    }

    /// Elements of one output plane.
    pub fn out_plane_len(&self) -> usize {
        self.pool.map_or(self.plane_len(), |g| g.out_plane())
    }

    /// Input elements for `t` timesteps.
    pub fn input_len(&self, t: usize) -> usize {
        let steps = if self.repeated { 1 } else { t };
        steps * self.planes * self.plane_len()
    }

    /// Output elements for `t` timesteps, `[T·B, C, OH, OW]`.
    pub fn output_len(&self, t: usize) -> usize {
        t * self.planes * self.out_plane_len()
    }

    pub(super) fn check(&self, t: usize, input: usize, output: usize) {
        assert!(t > 0, "lif planes: T = 0");
        assert!(self.channels > 0 && self.planes.is_multiple_of(self.channels));
        assert_eq!(input, self.input_len(t), "lif planes: input length");
        assert_eq!(output, self.output_len(t), "lif planes: output length");
        if let Some(a) = self.affine {
            let c = self.channels;
            assert!(a.mean.len() == c && a.scale.len() == c && a.shift.len() == c);
        }
        if let Some(g) = self.pool {
            assert!(g.planes == 1 && g.h == self.height && g.w == self.width);
        }
    }
}

/// Evaluation forward of a LIF layer with its neighbours fused, see the module docs: `input`
/// per [`PlaneStages::repeated`], `out` `[T·B, C, OH, OW]` (overwritten). Returns the same
/// statistics as [`super::forward_eval`] (Σ `U[T]` summed in a different order).
///
/// # Panics
/// If a length disagrees with `stages` and `timesteps`.
pub fn forward_eval_planes(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: &[f32],
    out: &mut [f32],
) -> ForwardSums {
    stages.check(timesteps, input.len(), out.len());
    run(p, u0, timesteps, stages, Some(input), out)
}

/// [`forward_eval_planes`] in place, for stages that keep the shape (no repeat, no pooling):
/// `io` holds the input `[T·B, C, H, W]` on entry and the output on return, so no output
/// buffer is allocated.
///
/// # Panics
/// If the stages repeat or pool, or a length disagrees with `stages` and `timesteps`.
pub fn forward_eval_planes_in_place(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    io: &mut [f32],
) -> ForwardSums {
    assert!(
        !stages.repeated && stages.pool.is_none(),
        "lif planes: in place needs the same input and output shape"
    );
    stages.check(timesteps, io.len(), io.len());
    run(p, u0, timesteps, stages, None, io)
}

fn run(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: Option<&[f32]>,
    out: &mut [f32],
) -> ForwardSums {
    let (hw, ohw) = (stages.plane_len(), stages.out_plane_len());
    if stages.planes == 0 || hw == 0 {
        return ForwardSums::default();
    }
    let per_task = MIN_TASK.div_ceil(hw);
    let tasks = stages.planes.div_ceil(per_task);
    let row = stages.planes * ohw;
    let mut out_rows = super::split_rows(out, timesteps, row, per_task * ohw, tasks);
    let body = |(task, rows): (usize, &mut [&mut [f32]])| {
        let first = task * per_task;
        let last = (first + per_task).min(stages.planes);
        let mut scratch = Scratch::new(hw, stages);
        let mut sums = ForwardSums::default();
        for plane in first..last {
            let local = (plane - first) * ohw;
            let s = match p.reset {
                Reset::Soft => {
                    let ps = p.specialized(p.surrogate.kind(), p.surrogate.shape(), Reset::Soft);
                    run_plane(&ps, u0, stages, plane, input, rows, local, &mut scratch)
                }
                Reset::Hard => {
                    let ph = p.specialized(p.surrogate.kind(), p.surrogate.shape(), Reset::Hard);
                    run_plane(&ph, u0, stages, plane, input, rows, local, &mut scratch)
                }
            };
            sums = sums.add(s);
        }
        sums
    };
    let sums: Vec<ForwardSums> = out_rows
        .par_chunks_mut(timesteps)
        .enumerate()
        .map(body)
        .collect();
    sums.into_iter()
        .fold(ForwardSums::default(), ForwardSums::add)
}

/// One task's plane-sized buffers.
struct Scratch {
    /// The membrane state `U`.
    u: Vec<f32>,
    /// The repeated input after the affine, computed once per plane.
    x: Vec<f32>,
    /// The LIF output before pooling.
    o: Vec<f32>,
    /// Per 8-neuron group: lanes that spiked at some step.
    fired: Vec<u8>,
}

impl Scratch {
    fn new(hw: usize, stages: &PlaneStages) -> Self {
        let needs_x = stages.affine.is_some() && stages.repeated;
        Scratch {
            u: vec![0.0; hw],
            x: vec![0.0; if needs_x { hw } else { 0 }],
            o: vec![0.0; if stages.pool.is_some() { hw } else { 0 }],
            fired: vec![0; hw.div_ceil(LANES)],
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_plane(
    p: &StepParams,
    u0: f32,
    stages: &PlaneStages,
    plane: usize,
    input: Option<&[f32]>,
    rows: &mut [&mut [f32]],
    local: usize,
    s: &mut Scratch,
) -> ForwardSums {
    let hw = stages.plane_len();
    s.u.fill(u0);
    s.fired.fill(0);
    let mut spikes = 0u64;
    let ohw = stages.out_plane_len();
    for (t, out_row) in rows.iter_mut().enumerate() {
        let step_plane = if stages.repeated {
            plane
        } else {
            t * stages.planes + plane
        };
        let affine = stages.affine.map(|a| {
            let c = plane % stages.channels;
            (a.mean[c], a.scale[c], a.shift[c])
        });
        let Some(input) = input else {
            // In place: the row holds this step's input plane.
            let io = &mut out_row[local..local + hw];
            spikes += lif_step_plane(p, None, affine, &mut s.u, io, &mut s.fired);
            continue;
        };
        let src = &input[step_plane * hw..][..hw];
        // A repeated input is normalized once; otherwise the affine runs in registers.
        let (x, affine): (&[f32], _) = match affine {
            Some((m, a, b)) if stages.repeated => {
                if t == 0 {
                    s.x.copy_from_slice(src);
                    bn::normalize_plane_inplace(&mut s.x, m, a, b);
                }
                (&s.x, None)
            }
            _ => (src, affine),
        };
        let dst = &mut out_row[local..local + ohw];
        let o: &mut [f32] = if stages.pool.is_some() { &mut s.o } else { dst };
        spikes += lif_step_plane(p, Some(x), affine, &mut s.u, o, &mut s.fired);
        if let Some(g) = &stages.pool {
            max_pool_spikes(g, &s.o, &mut out_row[local..local + ohw]);
        }
    }
    // Σ U[T] over the neurons that fired: f32 lanes per plane (≤ a few hundred terms), f64
    // across planes.
    let groups = hw / LANES;
    let mut lanes = f32x8::ZERO;
    for (v, &bits) in s.fired[..groups].iter().enumerate() {
        lanes += mask_from_bits(bits) & load(&s.u, v * LANES);
    }
    let mut sum_u = lanes.to_array().iter().map(|&x| x as f64).sum::<f64>();
    for j in groups * LANES..hw {
        if s.fired[j / LANES] >> (j % LANES) & 1 == 1 {
            sum_u += s.u[j] as f64;
        }
    }
    let active = s.fired.iter().map(|b| b.count_ones() as u64).sum();
    ForwardSums {
        spikes,
        active,
        sum_u_active: sum_u,
    }
}

/// One timestep over a plane: `o ← step(u, f(x)).o` with `f` the per-channel `affine`
/// `(m, a, b)` if given ([`bn::affine8`] / [`bn::affine1`] at [`bn::normalize_plane_inplace`]'s
/// positions) and `x` = `o` itself if `None` (in place); `u ← U`, spiking lanes OR-ed into
/// `fired`. Returns the number of spikes.
#[inline(always)]
fn lif_step_plane(
    p: &StepParams,
    x: Option<&[f32]>,
    affine: Option<(f32, f32, f32)>,
    u: &mut [f32],
    o: &mut [f32],
    fired: &mut [u8],
) -> u64 {
    let len = o.len();
    let groups = len / LANES;
    let mut spikes = 0u64;
    for (v, any) in fired[..groups].iter_mut().enumerate() {
        let j = v * LANES;
        let mut xv = load(x.unwrap_or(o), j);
        if let Some((m, a, b)) = affine {
            xv = bn::affine8(xv, m, a, b);
        }
        let out = step::<f32x8>(p, load(u, j), xv);
        store(o, j, out.o);
        store(u, j, out.u);
        let bits = out.s.to_bitmask() as u8;
        *any |= bits;
        spikes += bits.count_ones() as u64;
    }
    for j in groups * LANES..len {
        let mut xj = x.map_or(o[j], |x| x[j]);
        if let Some((m, a, b)) = affine {
            xj = bn::affine1(xj, m, a, b);
        }
        let out = step::<f32>(p, u[j], xj);
        o[j] = out.o;
        u[j] = out.u;
        fired[j / LANES] |= (out.s as u8) << (j % LANES);
        spikes += out.s as u64;
    }
    spikes
}

/// Max pooling of one LIF output plane. Its values are `+0.0` or the output scale `s > 0`,
/// so a window's maximum is the bitwise OR of its elements' bits (`s` if any is `s`), which
/// vectorizes where a NaN-aware `max` does not.
pub(super) fn max_pool_spikes(g: &PoolGeom, o: &[f32], y: &mut [f32]) {
    if g.k == 2 && g.stride == 2 && g.pad == 0 {
        for (oy, yr) in y.chunks_exact_mut(g.ow).enumerate() {
            let r0 = &o[2 * oy * g.w..][..2 * g.ow];
            let r1 = &o[(2 * oy + 1) * g.w..][..2 * g.ow];
            // Read as u64 pairs where the rows are 8-byte aligned (even widths): OR-ing the
            // halves of a word then vectorizes without lane shuffles.
            let pairs = bytemuck::try_cast_slice::<f32, u64>(r0)
                .and_then(|a| Ok((a, bytemuck::try_cast_slice::<f32, u64>(r1)?)));
            if let Ok((a, b)) = pairs {
                for ((yv, &a), &b) in yr.iter_mut().zip(a).zip(b) {
                    let w = a | b;
                    *yv = f32::from_bits(w as u32 | (w >> 32) as u32);
                }
                continue;
            }
            for ((yv, a), b) in yr
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                let bits = a[0].to_bits() | a[1].to_bits() | b[0].to_bits() | b[1].to_bits();
                *yv = f32::from_bits(bits);
            }
        }
    } else {
        pool::max_plane(g, o, y, None);
    }
}

#[cfg(test)]
mod tests {
    use super::super::forward_eval;
    use super::*;
    use crate::kernels::bn::{normalize_inplace, BnDims};
    use crate::neuron::params::Derived;
    use crate::neuron::surrogate::{Surrogate, SurrogateKind, SurrogateShape};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn params(reset: Reset, out_theta: bool) -> StepParams {
        let d = Derived {
            theta: 0.9,
            lambda: 0.4,
            one_minus_lambda: 0.6,
            dtheta_dk: 0.5,
            one_minus_lambda_f64: 0.6,
        };
        let kind = if out_theta {
            SurrogateKind::Trsg
        } else {
            SurrogateKind::As
        };
        StepParams::new(
            &d,
            Surrogate::new(kind, SurrogateShape::Rect, 0.8).unwrap(),
            reset,
        )
    }

    /// The unfused chain: batch norm in place, repeat copy, in-place LIF, max pool.
    fn chain(
        p: &StepParams,
        u0: f32,
        t: usize,
        st: &PlaneStages,
        input: &[f32],
    ) -> (Vec<f32>, ForwardSums) {
        let mut x = input.to_vec();
        if let Some(a) = st.affine {
            let d = BnDims {
                n: x.len() / (st.channels * st.plane_len()),
                c: st.channels,
                hw: st.plane_len(),
            };
            normalize_inplace(&mut x, d, a.mean, a.scale, a.shift);
        }
        if st.repeated {
            x = x.repeat(t);
        }
        let sums = forward_eval(p, u0, t, &mut x);
        let out = match st.pool {
            Some(g) => {
                let g = PoolGeom::new(t * st.planes, g.h, g.w, g.k, g.stride, g.pad).unwrap();
                let mut y = vec![0.0; g.planes * g.out_plane()];
                pool::max_forward(&g, &x, &mut y, None);
                y
            }
            None => x,
        };
        (out, sums)
    }

    /// Every stage combination, both resets and output scales, planes with a scalar tail, odd
    /// pooling geometries and several tasks: the same bits as the chain, the same counts.
    #[test]
    fn fused_planes_equal_the_unfused_chain() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let shapes = [(2, 3, 5, 7), (40, 16, 6, 6), (1, 2, 1, 1)];
        let (mut cases, mut total_spikes) = (0, 0);
        for (b, c, h, w) in shapes {
            let built = [
                PoolGeom::new(1, h, w, 2, 2, 0),
                PoolGeom::new(1, h, w, 3, 2, 1),
            ];
            let pools = std::iter::once(None).chain(built.into_iter().flatten().map(Some));
            for pool in pools {
                for (repeated, with_affine) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    for (reset, out_theta) in [(Reset::Soft, true), (Reset::Hard, false)] {
                        let t = 3;
                        let p = params(reset, out_theta);
                        let mean: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
                        let scale: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..2.0)).collect();
                        let shift: Vec<f32> = (0..c).map(|_| rng.random_range(-0.3..0.6)).collect();
                        let st = PlaneStages {
                            planes: b * c,
                            channels: c,
                            height: h,
                            width: w,
                            repeated,
                            affine: with_affine.then_some(ChannelAffine {
                                mean: &mean,
                                scale: &scale,
                                shift: &shift,
                            }),
                            pool,
                        };
                        let input: Vec<f32> = (0..st.input_len(t))
                            .map(|_| rng.random_range(-1.0..2.5))
                            .collect();
                        let (want, want_sums) = chain(&p, 0.2, t, &st, &input);
                        let mut got = vec![f32::NAN; st.output_len(t)];
                        let sums = forward_eval_planes(&p, 0.2, t, &st, &input, &mut got);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{b}x{c}x{h}x{w} {pool:?} rep {repeated} bn {with_affine} {reset:?}"
                        );
                        assert_eq!(
                            (sums.spikes, sums.active),
                            (want_sums.spikes, want_sums.active)
                        );
                        if !repeated && pool.is_none() {
                            let mut io = input.clone();
                            let s2 = forward_eval_planes_in_place(&p, 0.2, t, &st, &mut io);
                            assert_eq!(bits(&io), bits(&want), "in place");
                            assert_eq!(s2, sums);
                        }
                        assert!(
                            (sums.sum_u_active - want_sums.sum_u_active).abs()
                                <= 1e-4 * (1.0 + want_sums.sum_u_active.abs())
                        );
                        total_spikes += want_sums.spikes;
                        cases += 1;
                    }
                }
            }
        }
        // (5×7 and 6×6: no pool, 2×2, 3×3/2; 1×1: no pool, 3×3/2) × 4 stage sets × 2 resets.
        assert_eq!(cases, (3 + 3 + 2) * 4 * 2);
        assert!(total_spikes > 10_000);
    }

    #[test]
    fn the_result_does_not_depend_on_the_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (b, c, h, w, t) = (48, 16, 6, 6, 4);
        let st = PlaneStages {
            planes: b * c,
            channels: c,
            height: h,
            width: w,
            repeated: true,
            affine: None,
            pool: PoolGeom::new(1, h, w, 2, 2, 0),
        };
        let input: Vec<f32> = (0..st.input_len(t))
            .map(|_| rng.random_range(-1.0..2.5))
            .collect();
        let p = params(Reset::Soft, true);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.0; st.output_len(t)];
            let s = pool.install(|| forward_eval_planes(&p, 0.0, t, &st, &input, &mut out));
            (out, s.sum_u_active.to_bits())
        };
        assert_eq!(run(1), run(2));
    }
}
