//! A one-channel stem's weight gradient through a training batch norm, by linearity, from sums
//! a fused neuron backward takes plane by plane.
//!
//! The batch norm's backward is an affine map per channel `o`,
//! `dY = a_o·g + b_o·(x − μ_o) + c_o` (`g` the gradient of its output, `x` its input, see
//! [`GradAffine`]), so a 3×3 stem's weight gradient on one-channel images `X` splits into
//!
//! `dW[o][s] = a_o·Σ_n (g_no ⋆ X_n)[s] + b_o·Σ_n ((x_no − μ_o) ⋆ X_n)[s] + c_o·Σ_n (1 ⋆ X_n)[s]`
//!
//! (`⋆` the correlation over the plane with the conv's zero padding, `s` a tap). The first
//! term needs only plane `(n, o)` of `g` and image `n`: its [`PlaneTaps`] are taken by
//! [`TapScratch::plane_taps`] while the plane is in L1 (in the fused neuron backward, right
//! after it has summed the plane's gradient over the steps and taken the batch norm's sums of
//! it). The second needs no plane at all: `x` is this conv's own output `W ⋆ X (+ bias)`, so
//! `Σ_n x_no ⋆ X_n = Σ_t W[o][t]·A[t][s]` (+ the bias times the third term's sums) with `A`
//! the images' autocorrelation over the 3×3 taps, 81 sums over the batch. `a`, `b`, `c`
//! depend on the batch norm's sums over the whole batch, known only after the backward's
//! pass; [`weight_grad`] then combines.
//!
//! Why: otherwise the neuron's backward writes `g` (`mnist-cnn`: 6.4 MB), and the stem's
//! gradient ([`super::stem::backward_weight_through_bn`]) reads it and `x` again to form `dY`
//! row by row: three 6.4 MB streams the step no longer moves. Skipping that pass altogether
//! (a wrong gradient, timing only) took `mnist-cnn`'s 2-thread training step up 4–12 %
//! (5 interleaved pairs). Criterion `train_planes/stem_backward_{through_dy,linear}` (the
//! stem neuron's backward with the stem's weight gradient, Zen 4): 8.9 → 7.7 and 10.0 → 8.8
//! ms at 1 thread, 4.75 → 4.60 and 5.09 → 4.95 ms at 2; the training step, 8 interleaved
//! pairs at 2 threads: ratios 0.97–1.15, median 1.06. Rows are loaded straight from the
//! planes, the lanes past a row masked: copying each 28-value row into a zero-padded buffer
//! first (a `memcpy` call a row) made this as slow as the route it replaces. Those figures
//! took `(x − μ) ⋆ X` per plane too (18 sums a plane); through the autocorrelation instead:
//! the criterion pair 4.47 → 4.36 and 5.09 → 4.08 ms at 2 threads, 8.5 → 7.1 and 8.2 → 7.6 ms
//! at 1; the step against the 18-sum version, 8 interleaved pairs: ratios 0.94–1.09, median
//! 1.025 (a noisy hour).
//!
//! Rounding: a plane's taps (and an image's autocorrelation) are summed in f32 lanes over its
//! rows, reduced to f64, summed over images in image order (fixed image ranges) and combined
//! in f64, so the result does not depend on the thread count or the tasks. It is not the bits
//! of forming `dY` in f32 first (the tests bound the difference), and it takes `x` to be the
//! conv's output to the forward's rounding — the weight and bias the forward ran with.

use super::ConvGeom;
use crate::kernels::bn::GradAffine;
use rayon::prelude::*;
use wide::f32x16;

const LANES: usize = 16;

/// Taps of a 3×3 kernel.
const TAPS: usize = 9;

/// One plane's sums: the 9 taps of `g ⋆ X` (row-major taps).
pub type PlaneTaps = [f64; TAPS];

/// True if a conv of geometry `g` takes its weight gradient from [`PlaneTaps`]: 3×3, stride 1,
/// padding 1, one input channel.
pub fn applies(g: &ConvGeom) -> bool {
    g.k == 3 && g.stride == 1 && g.pad == 1 && g.c_in == 1
}

/// One thread's buffer for [`TapScratch::plane_taps`]: the current image zero-padded. Reused
/// across planes and calls.
#[derive(Default)]
pub struct TapScratch {
    padded: Vec<f32>,
    height: usize,
    width: usize,
}

impl TapScratch {
    /// Row stride of the padded image: the width rounded up to whole vectors, plus the two
    /// columns the taps shift by.
    fn row(&self) -> usize {
        self.width.div_ceil(LANES) * LANES + 2
    }

    /// Pads `image` (`height × width`, one channel) for the following [`Self::plane_taps`].
    ///
    /// # Panics
    /// If `image.len() != height·width`.
    pub fn load_image(&mut self, image: &[f32], height: usize, width: usize) {
        assert_eq!(image.len(), height * width, "stem taps: image length");
        if (height, width) != (self.height, self.width) {
            (self.height, self.width) = (height, width);
            // Borders and the round-up past the plane stay zero: only the interior is copied.
            self.padded = vec![0.0; (height + 2) * self.row()];
        }
        let row = self.row();
        for (y, src) in image.chunks_exact(width.max(1)).enumerate() {
            self.padded[(y + 1) * row + 1..][..width].copy_from_slice(src);
        }
    }

    /// The [`PlaneTaps`] of one plane of `grad` against the image last loaded.
    ///
    /// # Panics
    /// If the plane's length is not the loaded image's.
    pub fn plane_taps(&mut self, grad: &[f32]) -> PlaneTaps {
        let (h, w) = (self.height, self.width);
        assert_eq!(grad.len(), h * w, "stem taps: plane length");
        let row = self.row();
        let masks = RowMasks::new(w);
        let mut acc = [f32x16::splat(0.0); TAPS];
        for y in 0..h {
            for v in 0..w.div_ceil(LANES) {
                // Lanes past the row's end (the next row's, or beyond the plane) count zero.
                let gv = lanes(grad, y * w + v * LANES) & masks.of(v);
                for i in 0..3 {
                    let xr = &self.padded[(y + i) * row + v * LANES..][..LANES + 2];
                    for j in 0..3 {
                        acc[i * 3 + j] = gv.mul_add(load(&xr[j..]), acc[i * 3 + j]);
                    }
                }
            }
        }
        acc.map(|a| a.reduce_add() as f64)
    }

    /// `A[t][s] = Σ_p X̃[p + t]·X̃[p + s]` of the image last loaded (`X̃` zero-padded, `p` over
    /// the output positions, `t`, `s` row-major taps): with it, the correlation of the conv's
    /// own output with its input is `Σ_t W[t]·A[t][s]` (see [`weight_grad`]).
    fn autocorrelation(&self) -> [[f64; TAPS]; TAPS] {
        let (h, w, row) = (self.height, self.width, self.row());
        let at = |y: usize, v: usize, t: usize| (y + t / 3) * row + v * LANES + t % 3;
        let masks = RowMasks::new(w);
        std::array::from_fn(|t| {
            let mut acc = [f32x16::splat(0.0); TAPS];
            for y in 0..h {
                for v in 0..w.div_ceil(LANES) {
                    let xt = load(&self.padded[at(y, v, t)..]) & masks.of(v);
                    for (s, a) in acc.iter_mut().enumerate() {
                        *a = xt.mul_add(load(&self.padded[at(y, v, s)..]), *a);
                    }
                }
            }
            acc.map(|a| a.reduce_add() as f64)
        })
    }
}

/// Per vector of a row `w` wide, all bits set in the lanes that lie inside it.
struct RowMasks {
    w: usize,
    full: f32x16,
    tail: f32x16,
}

impl RowMasks {
    fn new(w: usize) -> Self {
        let (full, tail) = (lane_mask(LANES), lane_mask(w % LANES));
        RowMasks { w, full, tail }
    }

    #[inline(always)]
    fn of(&self, v: usize) -> f32x16 {
        if (v + 1) * LANES <= self.w {
            self.full
        } else {
            self.tail
        }
    }
}

fn load(s: &[f32]) -> f32x16 {
    f32x16::new(s[..LANES].try_into().expect("16 lanes"))
}

/// The 16 values of `plane` from `at`, zeros past its end.
fn lanes(plane: &[f32], at: usize) -> f32x16 {
    match plane.get(at..at + LANES) {
        Some(s) => load(s),
        None => {
            let mut v = [0.0; LANES];
            for (d, &s) in v.iter_mut().zip(&plane[at..]) {
                *d = s;
            }
            f32x16::new(v)
        }
    }
}

/// All bits set in the first `valid` lanes, none in the others.
fn lane_mask(valid: usize) -> f32x16 {
    f32x16::new(std::array::from_fn(|k| {
        f32::from_bits(if k < valid { u32::MAX } else { 0 })
    }))
}

/// `Σ_n (1 ⋆ X_n)[i][j]`: per tap, the sum of the image values a tap's window reads.
fn window_sums(g: &ConvGeom, images: &[f32]) -> [f64; TAPS] {
    let (h, w) = (g.h, g.w);
    let mut sums = [0.0f64; TAPS];
    if h == 0 || w == 0 {
        return sums;
    }
    // Tap offset i reads rows [i − 1, h + i − 1) ∩ [0, h): all but the last (i = 0) or the
    // first (i = 2) row; columns likewise.
    let range = |i: usize, len: usize| match i {
        0 => 0..len - 1,
        1 => 0..len,
        _ => 1..len,
    };
    // Per row, its sum over each tap's column range (reused across images).
    let mut row_sums = vec![[0.0f64; 3]; h];
    for image in images.chunks_exact(h * w) {
        for (s, values) in row_sums.iter_mut().zip(image.chunks_exact(w)) {
            let all: f64 = values.iter().map(|&v| v as f64).sum();
            *s = [all - values[w - 1] as f64, all, all - values[0] as f64];
        }
        for i in 0..3 {
            for j in 0..3 {
                sums[i * 3 + j] += row_sums[range(i, h)].iter().map(|s| s[j]).sum::<f64>();
            }
        }
    }
    sums
}

/// `A[t][s]` ([`TapScratch::autocorrelation`]) summed over `images`: per task a fixed range
/// of images, each image's f32 lanes reduced to f64, the tasks' sums added in order.
fn autocorrelation(g: &ConvGeom, images: &[f32]) -> [[f64; TAPS]; TAPS] {
    let hw = g.h * g.w;
    if hw == 0 {
        return [[0.0; TAPS]; TAPS];
    }
    let per = g.n.div_ceil(AUTOCORRELATION_TASKS).max(1);
    let parts: Vec<[[f64; TAPS]; TAPS]> = images
        .par_chunks(per * hw)
        .map(|task| {
            let mut scratch = TapScratch::default();
            let mut sum = [[0.0f64; TAPS]; TAPS];
            for image in task.chunks_exact(hw) {
                scratch.load_image(image, g.h, g.w);
                for (row, add) in sum.iter_mut().zip(scratch.autocorrelation()) {
                    for (s, a) in row.iter_mut().zip(add) {
                        *s += a;
                    }
                }
            }
            sum
        })
        .collect();
    let mut total = [[0.0f64; TAPS]; TAPS];
    for part in &parts {
        for (row, add) in total.iter_mut().zip(part) {
            for (s, a) in row.iter_mut().zip(add) {
                *s += a;
            }
        }
    }
    total
}

/// Image ranges of [`autocorrelation`]: a constant, so its sums do not depend on the thread
/// count.
const AUTOCORRELATION_TASKS: usize = 8;

/// `dw += ∂L/∂W` of a one-channel 3×3 stem ([`applies`]) from every output plane's
/// [`PlaneTaps`] (`taps`, `N·C_out` entries in plane order `[image, channel]`), the conv's
/// input `images` (`[N, 1, H, W]`), its `weight` and `bias` — the ones the forward ran with,
/// so the batch norm's input is this conv's output — and the batch norm's per-channel
/// [`GradAffine`]s.
///
/// The batch norm's input enters only through `Σ_n (x_no − μ_o) ⋆ X_n`, and `x` is the conv's
/// own output, so that is `Σ_t W[o][t]·A[t][s] + (bias_o − μ_o)·Σ_n (1 ⋆ X_n)[s]` with `A`
/// the images' autocorrelation over the taps (81 sums over the batch): nothing per plane.
///
/// # Panics
/// If [`applies`] is false for `g`, or a length disagrees with it.
pub fn weight_grad(
    g: &ConvGeom,
    images: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    taps: &[PlaneTaps],
    affines: &[GradAffine],
    dw: &mut [f32],
) {
    assert!(applies(g), "stem taps: {g:?} not taken here");
    assert!(
        images.len() == g.n * g.in_img()
            && weight.len() == g.weight_len()
            && bias.is_none_or(|b| b.len() == g.c_out)
            && taps.len() == g.n * g.c_out
            && affines.len() == g.c_out
            && dw.len() == g.weight_len(),
        "stem taps: lengths do not match {g:?}"
    );
    let ones = window_sums(g, images);
    // With running statistics (b = 0) the batch norm's input does not enter.
    let auto = affines
        .iter()
        .any(|k| k.b != 0.0)
        .then(|| autocorrelation(g, images));
    for (o, (dw_o, k)) in dw.chunks_exact_mut(TAPS).zip(affines).enumerate() {
        let mut by_grad = [0.0f64; TAPS];
        for plane in taps[o..].iter().step_by(g.c_out) {
            for (s, &t) in by_grad.iter_mut().zip(plane) {
                *s += t;
            }
        }
        let w_o = &weight[o * TAPS..][..TAPS];
        let offset = bias.map_or(0.0, |b| b[o] as f64) - k.mean as f64;
        for (s, d) in dw_o.iter_mut().enumerate() {
            let centred = auto.as_ref().map_or(0.0, |a| {
                let conv: f64 = w_o.iter().zip(a).map(|(&wt, at)| wt as f64 * at[s]).sum();
                conv + offset * ones[s]
            });
            let v = k.a as f64 * by_grad[s] + k.b as f64 * centred + k.c as f64 * ones[s];
            *d += v as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stem::tests::data;
    use super::*;

    /// Random affines with every term nonzero, and each channel's mean.
    fn affines(c_out: usize) -> Vec<GradAffine> {
        let (a, b, c, m) = (
            data(c_out, 11),
            data(c_out, 12),
            data(c_out, 13),
            data(c_out, 14),
        );
        (0..c_out)
            .map(|o| GradAffine {
                a: 1.5 + a[o],
                b: 0.1 + b[o] * 0.05,
                c: 0.2 * c[o] - 0.3,
                mean: 0.5 * m[o],
            })
            .collect()
    }

    /// `dW` by definition in f64 from `dY = a·g + b·(x − μ) + c`, and per entry the sum of its
    /// terms' magnitudes (the scale rounding errors are relative to).
    fn reference(
        g: &ConvGeom,
        images: &[f32],
        grad: &[f32],
        x: &[f32],
        k: &[GradAffine],
    ) -> Vec<(f64, f64)> {
        let (h, w) = (g.h as isize, g.w as isize);
        let mut dw = vec![(0.0f64, 0.0f64); g.weight_len()];
        for n in 0..g.n {
            for (o, k) in k.iter().enumerate() {
                for i in 0..3isize {
                    for j in 0..3isize {
                        let e = &mut dw[(o * 3 + i as usize) * 3 + j as usize];
                        for y in 0..h {
                            for xx in 0..w {
                                let (iy, ix) = (y + i - 1, xx + j - 1);
                                if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                    continue;
                                }
                                let at = ((n * g.c_out + o) * g.h + y as usize) * g.w + xx as usize;
                                let dy = k.a as f64 * grad[at] as f64
                                    + k.b as f64 * (x[at] - k.mean) as f64
                                    + k.c as f64;
                                let v = images[(n * g.h + iy as usize) * g.w + ix as usize] as f64;
                                e.0 += dy * v;
                                e.1 += (dy * v).abs();
                            }
                        }
                    }
                }
            }
        }
        dw
    }

    /// The stem's forward in f64 rounded to f32: what the batch norm's input is.
    fn conv(g: &ConvGeom, images: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (h, w) = (g.h as isize, g.w as isize);
        let mut x = vec![0.0f32; g.n * g.out_img()];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for y in 0..h {
                    for xx in 0..w {
                        let mut v = bias.map_or(0.0, |b| b[o] as f64);
                        for t in 0..TAPS {
                            let (iy, ix) = (y + t as isize / 3 - 1, xx + t as isize % 3 - 1);
                            if iy >= 0 && ix >= 0 && iy < h && ix < w {
                                let at = (n * g.h + iy as usize) * g.w + ix as usize;
                                v += weight[o * TAPS + t] as f64 * images[at] as f64;
                            }
                        }
                        x[((n * g.c_out + o) * g.h + y as usize) * g.w + xx as usize] = v as f32;
                    }
                }
            }
        }
        x
    }

    fn taps_of(g: &ConvGeom, images: &[f32], grad: &[f32]) -> Vec<PlaneTaps> {
        let hw = g.h * g.w;
        let mut scratch = TapScratch::default();
        let mut taps = Vec::new();
        for n in 0..g.n {
            scratch.load_image(&images[n * hw..][..hw], g.h, g.w);
            for o in 0..g.c_out {
                taps.push(scratch.plane_taps(&grad[(n * g.c_out + o) * hw..][..hw]));
            }
        }
        taps
    }

    #[test]
    fn matches_the_definition_and_the_route_through_dy() {
        // MNIST's stem, widths around one and four vectors, one row or column, 1×1; with and
        // without a bias.
        for &(n, h, w, c_out, with_bias) in &[
            (3, 28, 28, 8, false),
            (2, 9, 17, 5, true),
            (2, 5, 16, 3, false),
            (1, 3, 70, 2, true),
            (2, 1, 6, 2, false),
            (2, 7, 1, 2, true),
            (2, 1, 1, 4, false),
        ] {
            let g = ConvGeom::new(n, 1, h, w, c_out, 3, 1, 1).unwrap();
            let images = data(n * g.in_img(), 1);
            let (weight, bias) = (data(g.weight_len(), 4), data(c_out, 5));
            let bias = with_bias.then_some(&bias[..]);
            let (grad, x) = (data(n * g.out_img(), 2), conv(&g, &images, &weight, bias));
            let k = affines(c_out);
            let want = reference(&g, &images, &grad, &x, &k);
            let mut got = vec![0.5; g.weight_len()];
            let taps = taps_of(&g, &images, &grad);
            weight_grad(&g, &images, &weight, bias, &taps, &k, &mut got);
            let mut through_dy = vec![0.5; g.weight_len()];
            super::super::stem::backward_weight_through_bn(
                &g,
                &images,
                &grad,
                &x,
                &k,
                &mut through_dy,
            );
            for (e, ((&a, &r), &(v, mag))) in got.iter().zip(&through_dy).zip(&want).enumerate() {
                // f32 rounding of per-plane sums of 9·H·W products, and of the forward's
                // output, relative to their size.
                let tol = 1e-6 * mag + 1e-6;
                assert!((a as f64 - 0.5 - v).abs() <= tol, "{g:?} [{e}]: {a} vs {v}");
                assert!(
                    (r as f64 - 0.5 - v).abs() <= tol,
                    "{g:?} [{e}] through dY: {r} vs {v}"
                );
            }
        }
    }

    /// The affine's three terms each reach `dW`: dropping one moves it past the bound above.
    #[test]
    fn every_term_of_the_affine_counts() {
        let g = ConvGeom::new(2, 1, 6, 6, 3, 3, 1, 1).unwrap();
        let images = data(2 * g.in_img(), 4);
        let weight = data(g.weight_len(), 7);
        let grad = data(2 * g.out_img(), 5);
        let k = affines(3);
        let taps = taps_of(&g, &images, &grad);
        let mut full = vec![0.0; g.weight_len()];
        weight_grad(&g, &images, &weight, None, &taps, &k, &mut full);
        for drop in 0..3 {
            let mut kd = k.clone();
            for a in &mut kd {
                *[&mut a.a, &mut a.b, &mut a.c][drop] = 0.0;
            }
            let mut part = vec![0.0; g.weight_len()];
            weight_grad(&g, &images, &weight, None, &taps, &kd, &mut part);
            let moved = full
                .iter()
                .zip(&part)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(moved > 1e-2, "term {drop} moved dW by {moved}");
        }
    }

    #[test]
    fn does_not_depend_on_the_thread_count() {
        let g = ConvGeom::new(19, 1, 28, 28, 4, 3, 1, 1).unwrap();
        let images = data(19 * g.in_img(), 8);
        let weight = data(g.weight_len(), 9);
        let taps = taps_of(&g, &images, &data(19 * g.out_img(), 10));
        let k = affines(4);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut dw = vec![0.0; g.weight_len()];
            pool.install(|| weight_grad(&g, &images, &weight, None, &taps, &k, &mut dw));
            dw
        };
        let one = run(1);
        assert!(run(2) == one && run(3) == one);
    }
}
