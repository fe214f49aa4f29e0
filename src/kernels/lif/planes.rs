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
use super::route::{bits_at, is_2x2, pooled_bits};
use super::ForwardSums;
use crate::kernels::bn;
use crate::kernels::conv::sparse::{pack_plane, SpikeBits};
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
    /// Added to the input after `affine` (a residual block's shortcut before its neuron), if
    /// given; needs an input of all `T` steps (not `repeated`).
    pub addend: Option<Addend<'a>>,
}

/// A tensor `[T·B, C, H, W]` the plane kernel adds to its (normalized) input element by
/// element, as [`crate::kernels::elementwise::par_add_assign`] would.
#[derive(Clone, Copy, Debug)]
pub enum Addend<'a> {
    /// The values.
    Dense(&'a [f32]),
    /// Spikes, bit-packed as [`crate::kernels::conv::sparse::SpikeBits`] packs them: per
    /// plane `plane_words` words, bit `i` of word `j` standing for element `64·j + i`, whose
    /// value is `scale` where the bit is set and `+0.0` elsewhere.
    Spikes {
        /// All planes' words.
        words: &'a [u64],
        /// Words per plane, `H·W` rounded up to whole words.
        plane_words: usize,
        /// The spike value.
        scale: f32,
    },
}

impl<'a> Addend<'a> {
    /// The spikes `bits` stand for, as an addend.
    pub fn spikes(bits: &'a SpikeBits) -> Self {
        Addend::Spikes {
            words: bits.words(),
            plane_words: bits.plane_words(),
            scale: bits.scale(),
        }
    }
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
        match self.addend {
            Some(Addend::Dense(d)) => {
                assert!(!self.repeated, "lif planes: addend on a repeated input");
                assert_eq!(
                    d.len(),
                    t * self.planes * self.plane_len(),
                    "lif planes: addend"
                );
            }
            Some(Addend::Spikes {
                words, plane_words, ..
            }) => {
                assert!(!self.repeated, "lif planes: addend on a repeated input");
                assert_eq!(plane_words, self.plane_len().div_ceil(64));
                assert_eq!(
                    words.len(),
                    t * self.planes * plane_words,
                    "lif planes: addend"
                );
            }
            None => {}
        }
    }

    /// Words per output plane of the packed spikes ([`forward_eval_planes`]' `bits`).
    pub fn out_plane_words(&self) -> usize {
        self.out_plane_len().div_ceil(64)
    }
}

/// Evaluation forward of a LIF layer with its neighbours fused, see the module docs: `input`
/// per [`PlaneStages::repeated`], `out` `[T·B, C, OH, OW]` (overwritten). If `bits` is given
/// it receives `out` bit-packed as [`crate::kernels::conv::sparse::SpikeBits::pack`] packs it
/// ([`PlaneStages::out_plane_words`] words per plane), each plane packed while in cache.
/// Returns the same statistics as [`super::forward_eval`] (Σ `U[T]` summed in a different
/// order).
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
    bits: Option<&mut [u64]>,
) -> ForwardSums {
    stages.check(timesteps, input.len(), out.len());
    run(p, u0, timesteps, stages, Some(input), out, bits)
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
    bits: Option<&mut [u64]>,
) -> ForwardSums {
    assert!(
        !stages.repeated && stages.pool.is_none(),
        "lif planes: in place needs the same input and output shape"
    );
    stages.check(timesteps, io.len(), io.len());
    run(p, u0, timesteps, stages, None, io, bits)
}

fn run(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    stages: &PlaneStages,
    input: Option<&[f32]>,
    out: &mut [f32],
    bits: Option<&mut [u64]>,
) -> ForwardSums {
    let (hw, ohw) = (stages.plane_len(), stages.out_plane_len());
    if stages.planes == 0 || hw == 0 {
        return ForwardSums::default();
    }
    let per_task = MIN_TASK.div_ceil(hw);
    let tasks = stages.planes.div_ceil(per_task);
    let row = stages.planes * ohw;
    let mut out_rows = super::split_rows(out, timesteps, row, per_task * ohw, tasks);
    let pw = stages.out_plane_words();
    let mut bit_rows = match bits {
        Some(b) => {
            assert_eq!(b.len(), timesteps * stages.planes * pw, "lif planes: bits");
            super::split_rows(b, timesteps, stages.planes * pw, per_task * pw, tasks)
        }
        None => Vec::new(),
    };
    // Per task, its rows of packed words (if packing).
    let mut bit_tasks: Vec<Option<&mut [&mut [u64]]>> = if bit_rows.is_empty() {
        (0..tasks).map(|_| None).collect()
    } else {
        bit_rows.chunks_mut(timesteps).map(Some).collect()
    };
    let body = |(task, (rows, bit_rows)): (usize, (&mut [&mut [f32]], &mut TaskBits))| {
        let first = task * per_task;
        let last = (first + per_task).min(stages.planes);
        let mut scratch = Scratch::new(hw, stages);
        let mut sums = ForwardSums::default();
        for plane in first..last {
            let local = (plane - first) * ohw;
            let mut packed = bit_rows.as_deref_mut().map(|rows| PackedOut {
                rows,
                at: (plane - first) * pw,
                words: pw,
            });
            // The reset as a constant, so the inlined step loses its branch.
            let (kind, shape) = (p.surrogate.kind(), p.surrogate.shape());
            let at = (stages, plane, input, local);
            let s = match p.reset {
                Reset::Soft => {
                    let ps = p.specialized(kind, shape, Reset::Soft);
                    run_plane(&ps, u0, at, rows, &mut packed, &mut scratch)
                }
                Reset::Hard => {
                    let ph = p.specialized(kind, shape, Reset::Hard);
                    run_plane(&ph, u0, at, rows, &mut packed, &mut scratch)
                }
            };
            sums = sums.add(s);
        }
        sums
    };
    let sums: Vec<ForwardSums> = out_rows
        .par_chunks_mut(timesteps)
        .zip(bit_tasks.par_iter_mut())
        .enumerate()
        .map(body)
        .collect();
    sums.into_iter()
        .fold(ForwardSums::default(), ForwardSums::add)
}

/// One task's rows of packed output words, if the output is packed.
type TaskBits<'r, 'b> = Option<&'r mut [&'b mut [u64]]>;

/// Where one plane's packed output goes: word `at..at + words` of each step's row.
struct PackedOut<'r, 'b> {
    rows: &'r mut [&'b mut [u64]],
    at: usize,
    words: usize,
}

/// One task's plane-sized buffers.
struct Scratch {
    /// The membrane state `U`.
    u: Vec<f32>,
    /// The input after the affine (and addend): a repeated input's, computed once per plane,
    /// or one step's when there is an addend and the output is not in place.
    x: Vec<f32>,
    /// The LIF output before pooling.
    o: Vec<f32>,
    /// Per 8-neuron group: lanes that spiked at some step.
    fired: Vec<u8>,
}

impl Scratch {
    fn new(hw: usize, stages: &PlaneStages) -> Self {
        let needs_x = (stages.affine.is_some() && stages.repeated) || stages.addend.is_some();
        Scratch {
            u: vec![0.0; hw],
            x: vec![0.0; if needs_x { hw } else { 0 }],
            o: vec![0.0; if stages.pool.is_some() { hw } else { 0 }],
            fired: vec![0; hw.div_ceil(LANES)],
        }
    }
}

#[inline(always)]
fn run_plane(
    p: &StepParams,
    u0: f32,
    (stages, plane, input, local): (&PlaneStages, usize, Option<&[f32]>, usize),
    rows: &mut [&mut [f32]],
    packed: &mut Option<PackedOut>,
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
        let addend = stages.addend.map(|a| match a {
            Addend::Dense(d) => PlaneAddend::Dense(&d[step_plane * hw..][..hw]),
            Addend::Spikes {
                words,
                plane_words,
                scale,
            } => PlaneAddend::Spikes(&words[step_plane * plane_words..][..plane_words], scale),
        });
        match input {
            None => {
                // In place: the row holds this step's input plane.
                let io = &mut out_row[local..local + hw];
                spikes += match addend {
                    Some(add) => {
                        affine_add_plane(io, affine, add);
                        lif_step_plane(p, None, None, &mut s.u, io, &mut s.fired)
                    }
                    None => lif_step_plane(p, None, affine, &mut s.u, io, &mut s.fired),
                };
            }
            Some(input) => {
                let src = &input[step_plane * hw..][..hw];
                // A repeated input is normalized once, an added one per step; otherwise the
                // affine runs in registers.
                let (x, affine): (&[f32], _) = match (affine, addend) {
                    (_, Some(add)) => {
                        s.x.copy_from_slice(src);
                        affine_add_plane(&mut s.x, affine, add);
                        (&s.x, None)
                    }
                    (Some((m, a, b)), None) if stages.repeated => {
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
        }
        if let Some(po) = packed {
            let words = &mut po.rows[t][po.at..po.at + po.words];
            pack_plane(&out_row[local..local + ohw], words);
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

/// One plane of an [`Addend`].
#[derive(Clone, Copy)]
enum PlaneAddend<'a> {
    Dense(&'a [f32]),
    Spikes(&'a [u64], f32),
}

/// `x ← affine(x) + add` over one plane in one pass: the batch norm's operations (those of
/// [`bn::normalize_plane_inplace`], 8-lane groups from the plane start) then the residual
/// add, so the same bits as those two passes.
#[inline(always)]
fn affine_add_plane(x: &mut [f32], affine: Option<(f32, f32, f32)>, add: PlaneAddend) {
    let groups = x.len() / LANES;
    for v in 0..groups {
        let j = v * LANES;
        let mut xv = load(x, j);
        if let Some((m, a, b)) = affine {
            xv = bn::affine8(xv, m, a, b);
        }
        xv += match add {
            PlaneAddend::Dense(d) => load(d, j),
            // 8-lane groups never straddle a word: planes start on one.
            PlaneAddend::Spikes(words, s) => {
                mask_from_bits((words[j / 64] >> (j % 64)) as u8) & f32x8::splat(s)
            }
        };
        store(x, j, xv);
    }
    for (j, e) in x.iter_mut().enumerate().skip(groups * LANES) {
        if let Some((m, a, b)) = affine {
            *e = bn::affine1(*e, m, a, b);
        }
        *e += match add {
            PlaneAddend::Dense(d) => d[j],
            PlaneAddend::Spikes(words, s) => {
                if (words[j / 64] >> (j % 64)) & 1 == 1 {
                    s
                } else {
                    0.0
                }
            }
        };
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
    #[cfg(target_arch = "x86_64")]
    if super::pool2x2::applies(g) {
        // SAFETY: `applies` checked AVX-512F and the geometry; lengths are asserted inside.
        return unsafe { super::pool2x2::max_pool(g, o, y) };
    }
    max_pool_spikes_portable(g, o, y)
}

/// [`max_pool_spikes`] without AVX-512 (the reference its AVX-512 kernel matches).
pub(super) fn max_pool_spikes_portable(g: &PoolGeom, o: &[f32], y: &mut [f32]) {
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

/// [`max_pool_spikes`] for 2×2 windows at stride 2 from the plane's spike bits instead of its
/// values: bit `bit0 + i` of `spikes` is element `i` of the plane, and a window is `scale` (the
/// value of a spike) if any of its bits is set, else `+0.0` — the bits [`max_pool_spikes`]
/// gives on the values (`+0.0` or `scale > 0`). A 32nd of the bytes to read, and the values
/// need never be written ([`super::train_planes`]' forward).
///
/// # Panics
/// If the windows are not 2×2 at stride 2 without padding, or `y` is not one pooled plane.
pub(super) fn max_pool_bits(g: &PoolGeom, spikes: &[u8], bit0: usize, scale: f32, y: &mut [f32]) {
    assert!(
        is_2x2(g) && y.len() == g.oh * g.ow,
        "max pool bits: geometry"
    );
    #[cfg(target_arch = "x86_64")]
    if super::pool2x2::applies(g) {
        // SAFETY: `applies` checked AVX-512F and the geometry; `y`'s length is asserted above.
        return unsafe { super::pool2x2::max_pool_bits(g, spikes, bit0, scale, y) };
    }
    max_pool_bits_portable(g, spikes, bit0, scale, y)
}

/// [`max_pool_bits`] without AVX-512 (the reference its AVX-512 kernel matches), for planes of
/// any width: 16 windows (32 elements of each row) at a time.
pub(super) fn max_pool_bits_portable(
    g: &PoolGeom,
    spikes: &[u8],
    bit0: usize,
    scale: f32,
    y: &mut [f32],
) {
    for (oy, y_row) in y.chunks_exact_mut(g.ow).enumerate() {
        for (k, y16) in y_row.chunks_mut(16).enumerate() {
            let n = 2 * y16.len();
            let at = |row: usize| bits_at(spikes, bit0 + row * g.w + 32 * k, n);
            let windows = pooled_bits(at(2 * oy), at(2 * oy + 1));
            for (i, v) in y16.iter_mut().enumerate() {
                *v = if windows >> i & 1 == 1 { scale } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
#[path = "planes_tests.rs"]
mod tests;
