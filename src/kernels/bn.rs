//! Batch normalization over `[N, C, HW]` per channel (PyTorch `BatchNorm2d` conventions).
//!
//! Forward (training): `μ_c`, `σ²_c` over all `N·HW` values of channel `c` (biased variance),
//! `x̂ = (x − μ)·r` with `r = 1/√(σ² + ε)`, `y = γ·x̂ + β`.
//! Backward with batch statistics (`M = N·HW`):
//! `∂β = Σ dy`, `∂γ = Σ dy·x̂`, `dx = γ·r·(dy − ∂β/M − x̂·∂γ/M)`.
//! With fixed (running) statistics the last two terms vanish: `dx = γ·r·dy`.
//!
//! Statistics are per plane ([`plane_moments`]: f32 lanes over blocks of at most
//! [`STAT_BLOCK`] values, f64 across blocks, on values shifted by the plane's first element so
//! `Σx²/n − μ²` does not cancel), combined per channel in image order
//! ([`stats_from_moments`]); backward's sums are per plane too ([`plane_grad_sums`]). So a
//! fused kernel can produce either while the plane is in cache. Every result is the same for
//! any thread count.

use rayon::prelude::*;
use wide::{f32x16, f32x8};

const LANES: usize = 8;

/// Values summed in f32 lanes before the partial sum moves to f64 (128 per lane).
pub const STAT_BLOCK: usize = 1024;

/// Elements per parallel task in the element-wise passes (~64 KiB of f32), so small planes
/// (8×8) do not become one task each.
const MIN_TASK: usize = 16 * 1024;

/// The shape `[N, C, HW]` a batch-norm kernel works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnDims {
    /// Rows (`T·B`).
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Spatial positions per channel (`H·W`).
    pub hw: usize,
}

impl BnDims {
    /// Total elements `N·C·HW`.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel, `N·HW`.
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    /// The element ranges of channel `ch`, one per image (the tests' reference order).
    #[cfg(test)]
    fn segments(&self, ch: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.n).map(move |i| {
            let s = (i * self.c + ch) * self.hw;
            s..s + self.hw
        })
    }

    fn check(&self, what: &str, lens: &[usize], per_channel: &[usize]) {
        assert!(
            lens.iter().all(|&l| l == self.len()) && per_channel.iter().all(|&l| l == self.c),
            "batch-norm {what}: slice lengths do not match {self:?}"
        );
    }
}

/// `(Σ (a−sa)², Σ (a−sa))` over one block in f32 lanes (the shifted sum of squares): two
/// 16-lane accumulators per sum, as [`grad_block_sums`]. (One 8-lane chain per sum waited on
/// each add's latency: the statistics' pass was 2.9 % of a `mnist-cnn` training step on an
/// AVX-512 Xeon.)
fn block_sums(a: &[f32], sa: f32) -> (f32, f32) {
    const W: usize = 16;
    let load = |v: &[f32]| f32x16::new(v.try_into().expect("16 lanes"));
    let sav = f32x16::splat(sa);
    let zero = f32x16::splat(0.0);
    let (mut s1, mut s2) = ([zero; 2], [zero; 2]);
    let mut ac = a.chunks_exact(2 * W);
    for c in &mut ac {
        for k in 0..2 {
            let d = load(&c[k * W..][..W]) - sav;
            s1[k] += d;
            s2[k] = d.mul_add(d, s2[k]);
        }
    }
    let rest = ac.remainder();
    let half = rest.len() / W * W;
    if half > 0 {
        let d = load(&rest[..W]) - sav;
        s1[0] += d;
        s2[0] = d.mul_add(d, s2[0]);
    }
    let (mut t1, mut t2) = (0.0f32, 0.0f32);
    for &v in &rest[half..] {
        let d = v - sa;
        t1 += d;
        t2 = d.mul_add(d, t2);
    }
    (
        (s2[0] + s2[1]).reduce_add() + t2,
        (s1[0] + s1[1]).reduce_add() + t1,
    )
}

/// The moments of one plane (one image's values of one channel): its mean and the sum of
/// squared deviations from it. A batch's statistics are combined from its planes'
/// ([`stats_from_moments`]), so a kernel that has a plane in cache (a conv writing its output)
/// can take them there and the batch norm skips its own pass over the input.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlaneMoments {
    /// Mean of the plane's values.
    pub mean: f64,
    /// `Σ (x − mean)²` over the plane.
    pub m2: f64,
}

/// [`PlaneMoments`] of `x` (not empty): f32 lanes over blocks of [`STAT_BLOCK`] values
/// from the plane's start, shifted by its first value, added in f64. Every caller gets the
/// same bits for the same plane.
///
/// # Panics
/// If `x` is empty.
pub fn plane_moments(x: &[f32]) -> PlaneMoments {
    let shift = x[0];
    let (mut s2, mut s1) = (0.0f64, 0.0f64);
    for block in x.chunks(STAT_BLOCK) {
        let (bp, bs) = block_sums(block, shift);
        s2 += bp as f64;
        s1 += bs as f64;
    }
    let n = x.len() as f64;
    PlaneMoments {
        mean: shift as f64 + s1 / n,
        m2: (s2 - s1 * s1 / n).max(0.0),
    }
}

/// Planes per task of [`all_plane_moments`] (at least a task's worth of small planes).
fn planes_per_task(hw: usize) -> usize {
    MIN_TASK.div_ceil(hw.max(1))
}

/// [`plane_moments`] of every plane of `x` (`[N, C, HW]`) into `moments` (`N·C`, image-major).
///
/// # Panics
/// If a length disagrees with `d`.
pub fn all_plane_moments(x: &[f32], d: BnDims, moments: &mut [PlaneMoments]) {
    d.check("plane moments", &[x.len()], &[]);
    assert_eq!(moments.len(), d.n * d.c, "batch-norm plane moments: length");
    if d.hw == 0 {
        return;
    }
    let per = planes_per_task(d.hw);
    moments
        .par_chunks_mut(per)
        .zip(x.par_chunks(per * d.hw))
        .for_each(|(m, xs)| {
            for (m, plane) in m.iter_mut().zip(xs.chunks_exact(d.hw)) {
                *m = plane_moments(plane);
            }
        });
}

/// Batch mean and biased variance of every channel (both overwritten) from the moments of
/// its planes (`N·C`, image-major, as [`all_plane_moments`] writes them): the mean of the
/// planes' means, and `(Σ m2 + HW·Σ (mean_p − mean)²) / (N·HW)`, added in image order.
///
/// # Panics
/// If a length disagrees with `d`, or `d.count() == 0`.
pub fn stats_from_moments(moments: &[PlaneMoments], d: BnDims, mean: &mut [f32], var: &mut [f32]) {
    d.check("stats_from_moments", &[], &[mean.len(), var.len()]);
    assert_eq!(moments.len(), d.n * d.c, "batch-norm plane moments: length");
    assert!(d.count() > 0, "batch-norm statistics of an empty batch");
    // Image by image (the moments' order), every channel's sums at once.
    let mut sums = vec![0.0f64; d.c];
    for image in moments.chunks_exact(d.c) {
        for (s, p) in sums.iter_mut().zip(image) {
            *s += p.mean;
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / d.n as f64).collect();
    let (mut within, mut between) = (vec![0.0f64; d.c], vec![0.0f64; d.c]);
    for image in moments.chunks_exact(d.c) {
        for (((w, b), p), m) in within.iter_mut().zip(&mut between).zip(image).zip(&means) {
            *w += p.m2;
            *b += (p.mean - m) * (p.mean - m);
        }
    }
    for ch in 0..d.c {
        mean[ch] = means[ch] as f32;
        let sum_sq = within[ch] + d.hw as f64 * between[ch];
        var[ch] = (sum_sq / d.count() as f64).max(0.0) as f32;
    }
}

/// Batch mean and biased variance of every channel of `x` (both overwritten), from its planes'
/// moments ([`all_plane_moments`], [`stats_from_moments`]).
///
/// # Panics
/// If a slice length disagrees with `d`, or `d.count() == 0`.
pub fn batch_stats(x: &[f32], d: BnDims, mean: &mut [f32], var: &mut [f32]) {
    d.check("batch_stats", &[x.len()], &[mean.len(), var.len()]);
    assert!(d.count() > 0, "batch-norm statistics of an empty batch");
    let mut moments = vec![PlaneMoments::default(); d.n * d.c];
    all_plane_moments(x, d, &mut moments);
    stats_from_moments(&moments, d, mean, var);
}

/// `y = (x − mean[c])·scale[c] + shift[c]` for every element (`y` is overwritten, never read).
/// With `scale = γ·r`, `shift = β` this is the batch-norm output.
///
/// # Panics
/// If a slice length disagrees with `d`.
pub fn normalize(x: &[f32], y: &mut [f32], d: BnDims, mean: &[f32], scale: &[f32], shift: &[f32]) {
    d.check(
        "normalize",
        &[x.len(), y.len()],
        &[mean.len(), scale.len(), shift.len()],
    );
    if d.is_empty() {
        return;
    }
    y.par_chunks_mut(d.hw)
        .zip(x.par_chunks(d.hw))
        .enumerate()
        .with_min_len(MIN_TASK.div_ceil(d.hw))
        .for_each(|(plane, (yp, xp))| {
            let ch = plane % d.c;
            affine_sub(yp, xp, mean[ch], scale[ch], shift[ch]);
        });
}

/// [`normalize`] in place (the eval-mode output may reuse its input's memory).
///
/// # Panics
/// If a slice length disagrees with `d`.
pub fn normalize_inplace(x: &mut [f32], d: BnDims, mean: &[f32], scale: &[f32], shift: &[f32]) {
    d.check(
        "normalize_inplace",
        &[x.len()],
        &[mean.len(), scale.len(), shift.len()],
    );
    if d.is_empty() {
        return;
    }
    x.par_chunks_mut(d.hw)
        .enumerate()
        .with_min_len(MIN_TASK.div_ceil(d.hw))
        .for_each(|(plane, xp)| {
            let ch = plane % d.c;
            normalize_plane_inplace(xp, mean[ch], scale[ch], shift[ch]);
        });
}

/// One plane of [`normalize_inplace`]: `x ← (x − m)·a + b` with a multiply-add, 8 lanes at a
/// time from the plane's start ([`affine8`]) and a scalar tail ([`affine1`]). The plane-wise
/// LIF kernel applies the same two functions at the same positions, so a fused eval batch
/// norm gives the same bits on any target (with or without hardware FMA).
#[inline]
pub fn normalize_plane_inplace(x: &mut [f32], m: f32, a: f32, b: f32) {
    let mut groups = x.chunks_exact_mut(LANES);
    for g in &mut groups {
        let v = affine8(f32x8::new((&*g).try_into().unwrap()), m, a, b);
        g.copy_from_slice(&v.to_array());
    }
    for v in groups.into_remainder() {
        *v = affine1(*v, m, a, b);
    }
}

/// `y = (x − m)·a + b`: [`normalize_plane_inplace`] from one buffer into another, the same
/// lane groups and so the same bits, without first copying `x` into `y`.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn normalize_plane(x: &[f32], y: &mut [f32], m: f32, a: f32, b: f32) {
    assert_eq!(x.len(), y.len(), "normalize_plane: lengths");
    let mut groups = y.chunks_exact_mut(LANES);
    let mut src = x.chunks_exact(LANES);
    for (g, xs) in (&mut groups).zip(&mut src) {
        let v = affine8(f32x8::new(xs.try_into().unwrap()), m, a, b);
        g.copy_from_slice(&v.to_array());
    }
    for (v, &xv) in groups.into_remainder().iter_mut().zip(src.remainder()) {
        *v = affine1(xv, m, a, b);
    }
}

/// `(x − m)·a + b` on 8 lanes.
#[inline(always)]
pub fn affine8(x: f32x8, m: f32, a: f32, b: f32) -> f32x8 {
    (x - f32x8::splat(m)).mul_add(f32x8::splat(a), f32x8::splat(b))
}

/// `(x − m)·a + b` on one value.
#[inline(always)]
pub fn affine1(x: f32, m: f32, a: f32, b: f32) -> f32 {
    (x - m).mul_add(a, b)
}

/// `y = (x − m)·a + b` with vector lanes.
fn affine_sub(y: &mut [f32], x: &[f32], m: f32, a: f32, b: f32) {
    let (mv, av, bv) = (f32x8::splat(m), f32x8::splat(a), f32x8::splat(b));
    let mut yc = y.chunks_exact_mut(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (yo, xi) in (&mut yc).zip(&mut xc) {
        let v = (f32x8::new(xi.try_into().unwrap()) - mv).mul_add(av, bv);
        yo.copy_from_slice(&v.to_array());
    }
    for (yo, &xi) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *yo = (xi - m).mul_add(a, b);
    }
}

/// Batch-norm backward. On entry `dy_dx` holds `∂L/∂y`; on return it holds `∂L/∂x`.
/// `dgamma`, `dbeta` are overwritten with `Σ dy·x̂` and `Σ dy` per channel.
///
/// `batch_stats` says whether `mean`/`invstd` were the batch's own statistics (training) —
/// then the gradient flows through them too — or fixed running statistics.
///
/// # Panics
/// If a slice length disagrees with `d`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy_dx: &mut [f32],
    d: BnDims,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    batch_stats: bool,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    d.check("backward", &[x.len(), dy_dx.len()], &[mean.len()]);
    let mut sums = vec![(0.0, 0.0); d.n * d.c];
    grad_plane_sums(dy_dx, x, d, mean, &mut sums);
    backward_from_plane_sums(
        x,
        dy_dx,
        d,
        mean,
        invstd,
        gamma,
        batch_stats,
        &sums,
        dgamma,
        dbeta,
    );
}

/// `(Σ dy·(x − m), Σ dy)` over one plane: f32 lanes over blocks of [`STAT_BLOCK`] values from
/// the plane's start, f64 across blocks. A kernel that has a plane of `∂L/∂y` in cache (the
/// fused LIF backward) calls this and gets [`grad_plane_sums`]' bits.
///
/// # Panics
/// If the lengths differ.
pub fn plane_grad_sums(dy: &[f32], x: &[f32], m: f32) -> (f64, f64) {
    assert_eq!(dy.len(), x.len(), "plane_grad_sums: lengths");
    let (mut dot, mut sum) = (0.0f64, 0.0f64);
    for (a, b) in dy.chunks(STAT_BLOCK).zip(x.chunks(STAT_BLOCK)) {
        let (bp, bs) = grad_block_sums(a, b, m);
        dot += bp as f64;
        sum += bs as f64;
    }
    (dot, sum)
}

/// `(Σ a·(b − m), Σ a)` over one block: two 16-lane accumulators per sum, so the adds of
/// consecutive vectors do not wait on each other. (One 8-lane chain per sum ran at 1.4
/// cycles per element here: 4 % of a `mnist-cnn` training step, in the fused LIF backward's
/// per-plane sums.)
fn grad_block_sums(a: &[f32], b: &[f32], m: f32) -> (f32, f32) {
    const W: usize = 16;
    let load = |v: &[f32]| f32x16::new(v.try_into().expect("16 lanes"));
    let mv = f32x16::splat(m);
    let zero = f32x16::splat(0.0);
    let (mut s, mut p) = ([zero; 2], [zero; 2]);
    let mut ac = a.chunks_exact(2 * W);
    let mut bc = b.chunks_exact(2 * W);
    for (c, e) in (&mut ac).zip(&mut bc) {
        for k in 0..2 {
            let (x, y) = (load(&c[k * W..][..W]), load(&e[k * W..][..W]));
            s[k] += x;
            p[k] = x.mul_add(y - mv, p[k]);
        }
    }
    let (ar, br) = (ac.remainder(), bc.remainder());
    let half = ar.len() / W * W;
    if half > 0 {
        let (x, y) = (load(&ar[..W]), load(&br[..W]));
        s[0] += x;
        p[0] = x.mul_add(y - mv, p[0]);
    }
    let (mut ts, mut tp) = (0.0f32, 0.0f32);
    for (&x, &y) in ar[half..].iter().zip(&br[half..]) {
        ts += x;
        tp = x.mul_add(y - m, tp);
    }
    (
        (p[0] + p[1]).reduce_add() + tp,
        (s[0] + s[1]).reduce_add() + ts,
    )
}

/// [`plane_grad_sums`] of every plane `[image, channel]` of `dy` and `x` into `sums`
/// (`N·C` entries, overwritten), planes in parallel.
///
/// # Panics
/// If a slice length disagrees with `d`.
pub fn grad_plane_sums(dy: &[f32], x: &[f32], d: BnDims, mean: &[f32], sums: &mut [(f64, f64)]) {
    d.check("grad_plane_sums", &[dy.len(), x.len()], &[mean.len()]);
    assert_eq!(
        sums.len(),
        d.n * d.c,
        "grad_plane_sums: one entry per plane"
    );
    if d.hw == 0 {
        sums.fill((0.0, 0.0));
        return;
    }
    sums.par_iter_mut()
        .zip(dy.par_chunks(d.hw).zip(x.par_chunks(d.hw)))
        .enumerate()
        .with_min_len(MIN_TASK.div_ceil(d.hw))
        .for_each(|(plane, (s, (g, xp)))| *s = plane_grad_sums(g, xp, mean[plane % d.c]));
}

/// One channel's batch-norm backward as an affine of the output gradient `dy` and the input
/// `x`: `dx = a·dy + b·(x − mean) + c`. [`backward_from_plane_sums`] applies it with
/// [`GradAffine::apply`]'s rounding; a kernel that reads `dy` anyway can form `dx` with it as it
/// loads `dy` (the same bits, one pass over `dy` and `x` fewer).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GradAffine {
    /// Coefficient of `dy`: `γ/σ`.
    pub a: f32,
    /// Coefficient of `x − mean` (zero with running statistics).
    pub b: f32,
    /// The constant term (zero with running statistics).
    pub c: f32,
    /// The channel mean the forward used.
    pub mean: f32,
}

impl GradAffine {
    /// `dx` for one element.
    #[inline(always)]
    pub fn apply(&self, dy: f32, x: f32) -> f32 {
        dy.mul_add(self.a, (x - self.mean).mul_add(self.b, self.c))
    }

    /// [`GradAffine::apply`] on 8 lanes (the same bits per lane: every step rounds once).
    #[inline(always)]
    pub fn apply8(&self, dy: f32x8, x: f32x8) -> f32x8 {
        let xm = x - f32x8::splat(self.mean);
        dy.mul_add(
            f32x8::splat(self.a),
            xm.mul_add(f32x8::splat(self.b), f32x8::splat(self.c)),
        )
    }
}

/// The parameter gradients and every channel's [`GradAffine`] of a batch-norm backward from the
/// planes' [`plane_grad_sums`] (`sums`, `N·C` entries in plane order): a channel's sums are its
/// planes' added in image order, so any kernel that produced the plane sums gives the same bits
/// as [`backward`]. `dgamma` and `dbeta` are overwritten.
///
/// # Panics
/// If a slice length disagrees with `d`.
#[allow(clippy::too_many_arguments)]
pub fn grad_affines(
    d: BnDims,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    batch_stats: bool,
    sums: &[(f64, f64)],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Vec<GradAffine> {
    d.check(
        "backward",
        &[],
        &[
            mean.len(),
            invstd.len(),
            gamma.len(),
            dgamma.len(),
            dbeta.len(),
        ],
    );
    assert_eq!(
        sums.len(),
        d.n * d.c,
        "batch-norm backward: one sum per plane"
    );
    if d.is_empty() {
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        return vec![GradAffine::default(); d.c];
    }
    for (ch, (dg, db)) in dgamma.iter_mut().zip(dbeta.iter_mut()).enumerate() {
        let (mut sxd, mut sd) = (0.0f64, 0.0f64);
        for &(dot, sum) in sums[ch..].iter().step_by(d.c) {
            sxd += dot;
            sd += sum;
        }
        *dg = (sxd * invstd[ch] as f64) as f32;
        *db = sd as f32;
    }
    let m = d.count() as f64;
    (0..d.c)
        .map(|ch| {
            let r = invstd[ch] as f64;
            let a = gamma[ch] as f64 * r;
            let (b, c) = if batch_stats {
                (-a * r * dgamma[ch] as f64 / m, -a * dbeta[ch] as f64 / m)
            } else {
                (0.0, 0.0)
            };
            GradAffine {
                a: a as f32,
                b: b as f32,
                c: c as f32,
                mean: mean[ch],
            }
        })
        .collect()
}

/// [`backward`] given the planes' [`plane_grad_sums`]: [`grad_affines`], then each channel's
/// affine applied to `dy_dx` (overwritten with `dx`) and `x`.
///
/// # Panics
/// If a slice length disagrees with `d`.
#[allow(clippy::too_many_arguments)]
pub fn backward_from_plane_sums(
    x: &[f32],
    dy_dx: &mut [f32],
    d: BnDims,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    batch_stats: bool,
    sums: &[(f64, f64)],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    d.check("backward", &[x.len(), dy_dx.len()], &[]);
    let affines = grad_affines(d, mean, invstd, gamma, batch_stats, sums, dgamma, dbeta);
    if d.is_empty() {
        return;
    }
    dy_dx
        .par_chunks_mut(d.hw)
        .zip(x.par_chunks(d.hw))
        .enumerate()
        .with_min_len(MIN_TASK.div_ceil(d.hw))
        .for_each(|(plane, (g, xp))| {
            let k = affines[plane % d.c];
            let mut gc = g.chunks_exact_mut(LANES);
            let mut xc = xp.chunks_exact(LANES);
            for (go, xi) in (&mut gc).zip(&mut xc) {
                let dyv = f32x8::new((&*go).try_into().unwrap());
                let v = k.apply8(dyv, f32x8::new(xi.try_into().unwrap()));
                go.copy_from_slice(&v.to_array());
            }
            for (go, &xi) in gc.into_remainder().iter_mut().zip(xc.remainder()) {
                *go = k.apply(*go, xi);
            }
        });
}

/// PyTorch's running-statistics update: `rm ← (1−m)·rm + m·μ`, `rv ← (1−m)·rv + m·σ²·M/(M−1)`
/// (unbiased variance), for `count = M` values per channel.
///
/// # Panics
/// If the slices differ in length or `count < 2`.
pub fn update_running(
    running_mean: &mut [f32],
    running_var: &mut [f32],
    mean: &[f32],
    var_biased: &[f32],
    count: usize,
    momentum: f32,
) {
    let c = running_mean.len();
    assert!(
        running_var.len() == c && mean.len() == c && var_biased.len() == c,
        "update_running: lengths"
    );
    assert!(
        count >= 2,
        "update_running: unbiased variance needs 2 values"
    );
    let bessel = count as f64 / (count - 1) as f64;
    let mo = momentum as f64;
    for i in 0..c {
        running_mean[i] = ((1.0 - mo) * running_mean[i] as f64 + mo * mean[i] as f64) as f32;
        running_var[i] =
            ((1.0 - mo) * running_var[i] as f64 + mo * var_biased[i] as f64 * bessel) as f32;
    }
}

#[cfg(test)]
#[path = "bn_tests.rs"]
mod tests;
