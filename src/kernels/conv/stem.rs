//! The weight gradient of a 3×3, stride-1, padding-1 conv with few input channels (a stem on
//! the raw image: 1 channel for MNIST, 3 for CIFAR) as row-vector products, without im2col.
//!
//! `dW[o][c][a][b] = Σ_{n, y, x} dY[n][o][y][x] · X[n][c][y + a − 1][x + b − 1]`: per output
//! row of `dY`, each of the `9·C_in` taps is one product of that row with a shifted row of the
//! zero-padded input, summed into a 16-lane accumulator per tap. A task takes a fixed range
//! of images, pads each image once and walks its `dY` planes (the big operand, read once:
//! `mnist-cnn`'s stem gradient is 6.4 MB) with the padded planes in L1.
//!
//! Why: im2col turns the `C_in = 1` input into a `9 × N·H·W` column matrix and hands a GEMM
//! with `K = N·H·W` and 9 columns to `matrixmultiply`, which packs both operands: half the
//! speed of this kernel at `mnist-cnn`'s stem ([`preferred`] has the figures).
//!
//! Determinism: the image ranges are fixed by `N`; each sums its images, rows and row chunks
//! in order and reduces the lanes in a fixed order, and the ranges' partial sums are added in
//! range order: the result does not depend on the thread count.

use super::ConvGeom;
use super::OutputGrad;
use crate::kernels::bn::GradAffine;
use rayon::prelude::*;
use wide::f32x16;

/// Most input channels taken here (`9·C_in` accumulators per task).
pub const MAX_CHANNELS: usize = 4;
const LANES: usize = 16;

/// True if [`backward_weight`] takes `g`: a 3×3, stride-1, padding-1 conv with at most
/// [`MAX_CHANNELS`] input channels.
pub fn applies(g: &ConvGeom) -> bool {
    g.k == 3 && g.stride == 1 && g.pad == 1 && (1..=MAX_CHANNELS).contains(&g.c_in)
}

/// True if [`backward_weight`] should be used for `g`: it [`applies`] and the input has one
/// channel. Criterion `conv2d/dw` against `dw_im2col` (256 images, 1 and 2 threads):
/// `mnist-cnn`'s 1 → 32 stem at 28×28 4.2 against 8.8 ms and 2.6 against 5.0 ms; ResNet-19's
/// 3 → 64 stem at 32×32 7.6 against 5.2 ms and 5.0 against 4.1 ms (with 27 taps a row the
/// GEMM's register blocking wins).
pub fn preferred(g: &ConvGeom) -> bool {
    applies(g) && g.c_in == 1
}

/// Row width of the padded copies: the plane width rounded up to whole vectors, plus the two
/// columns the taps shift by.
fn padded_row(w: usize) -> usize {
    w.div_ceil(LANES) * LANES + 2
}

/// Image ranges (tasks) of [`backward_weight`]: a constant, so the summation order does not
/// depend on the thread count.
const TASKS: usize = 8;

/// `dw += ∂L/∂W` from the input `x` (`[N, C_in, H, W]`) and `dy` (`[N, C_out, H, W]`).
///
/// # Panics
/// If [`applies`] is false for `g`, or a slice length disagrees with `g`.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(applies(g), "stem backward_weight: {g:?} not taken here");
    super::check_lens(g, x.len(), dw.len(), dy.len(), "backward_weight");
    backward_weight_from(g, x, OutputGrad::Dense(dy), dw);
}

/// [`backward_weight`] for a conv followed by a training batch norm, from the batch norm's
/// output gradient `grad` and input `bn_input` (both `[N, C_out, H, W]`) and its per-channel
/// [`GradAffine`]s: `dY` is formed as each row is loaded, with the bits
/// [`crate::kernels::bn::backward_from_plane_sums`] would have written, so `dW` is the same as
/// [`backward_weight`] on that `dY`. Why: a stem needs no input gradient, so `dY` has no other
/// reader, and the batch norm's pass over `grad` and `bn_input` writing `dY` (`mnist-cnn`:
/// three 6.4 MB streams) is saved.
///
/// # Panics
/// If [`applies`] is false for `g`, a slice length disagrees with `g`, or `affines` is not one
/// per output channel.
pub fn backward_weight_through_bn(
    g: &ConvGeom,
    x: &[f32],
    grad: &[f32],
    bn_input: &[f32],
    affines: &[GradAffine],
    dw: &mut [f32],
) {
    assert!(applies(g), "stem backward_weight: {g:?} not taken here");
    super::check_lens(g, x.len(), dw.len(), grad.len(), "backward_weight");
    assert!(
        bn_input.len() == grad.len() && affines.len() == g.c_out,
        "stem backward_weight: batch-norm input or affines do not match {g:?}"
    );
    let rows = OutputGrad::ThroughBn {
        grad,
        bn_input,
        affines,
    };
    backward_weight_from(g, x, rows, dw);
}

fn backward_weight_from(g: &ConvGeom, x: &[f32], rows: OutputGrad, dw: &mut [f32]) {
    match g.c_in {
        1 => backward_weight_c::<1>(g, x, rows, dw),
        2 => backward_weight_c::<2>(g, x, rows, dw),
        3 => backward_weight_c::<3>(g, x, rows, dw),
        _ => backward_weight_c::<4>(g, x, rows, dw),
    }
}

/// [`backward_weight`] for `C` input channels: the `9·C` accumulators of a task are
/// registers.
fn backward_weight_c<const C: usize>(g: &ConvGeom, x: &[f32], dy: OutputGrad, dw: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    if g.n == 0 || h == 0 || w == 0 {
        return;
    }
    let (row, vectors) = (padded_row(w), w.div_ceil(LANES));
    let plane = (h + 2) * row;
    let taps = 9 * C;
    let per = g.n.div_ceil(TASKS);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut part = vec![0.0f32; g.c_out * taps];
            // One image's channels, zero-padded: a top and left border, the right border and
            // the round-up past the plane (written once; the copies keep the borders zero).
            let mut xp = vec![0.0f32; C * plane];
            // A row of dY with zeros past `w`, so the round-up lanes add nothing.
            let mut dy_row = vec![0.0f32; vectors * LANES];
            for n in t * per..((t + 1) * per).min(g.n) {
                let img = &x[n * C * h * w..][..C * h * w];
                for (p, src) in xp.chunks_exact_mut(plane).zip(img.chunks_exact(h * w)) {
                    for (y, r) in src.chunks_exact(w).enumerate() {
                        p[(y + 1) * row + 1..][..w].copy_from_slice(r);
                    }
                }
                for (o, po) in part.chunks_exact_mut(taps).enumerate() {
                    let mut acc = [[f32x16::splat(0.0); 9]; C];
                    let dy_plane = (n * g.c_out + o) * h * w;
                    for y in 0..h {
                        dy.read(dy_plane + y * w, o, &mut dy_row[..w]);
                        for (v, dv) in dy_row.chunks_exact(LANES).enumerate() {
                            let dv = load(dv);
                            for (c, ac) in acc.iter_mut().enumerate() {
                                let base = c * plane + y * row + v * LANES;
                                for a in 0..3 {
                                    let xr = &xp[base + a * row..][..LANES + 2];
                                    for b in 0..3 {
                                        ac[a * 3 + b] = dv.mul_add(load(&xr[b..]), ac[a * 3 + b]);
                                    }
                                }
                            }
                        }
                    }
                    for (d, a) in po.iter_mut().zip(acc.as_flattened()) {
                        *d += a.reduce_add();
                    }
                }
            }
            part
        })
        .collect();
    for part in &partials {
        for (d, p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
}

fn load(s: &[f32]) -> f32x16 {
    f32x16::new(s[..LANES].try_into().expect("16 lanes"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Values in [-1, 1] from a hash of the index and `seed`.
    pub(in crate::kernels::conv) fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|k| {
                let h = k.wrapping_mul(2654435761) ^ seed.wrapping_mul(0x9e37_79b9);
                ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The definition, in f64.
    fn reference(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f64> {
        let (h, w) = (g.h as isize, g.w as isize);
        let mut dw = vec![0.0f64; g.weight_len()];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for c in 0..g.c_in {
                    for a in 0..3isize {
                        for b in 0..3isize {
                            let mut s = 0.0;
                            for y in 0..h {
                                for xx in 0..w {
                                    let (iy, ix) = (y + a - 1, xx + b - 1);
                                    if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                        continue;
                                    }
                                    let d = dy[((n * g.c_out + o) * g.h + y as usize) * g.w
                                        + xx as usize];
                                    let v = x[((n * g.c_in + c) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    s += d as f64 * v as f64;
                                }
                            }
                            dw[((o * g.c_in + c) * 3 + a as usize) * 3 + b as usize] += s;
                        }
                    }
                }
            }
        }
        dw
    }

    #[test]
    fn matches_the_definition() {
        // MNIST's stem, a CIFAR-like 3-channel one, widths around one and four vectors, 1×1.
        for &(n, c_in, h, w, c_out) in &[
            (3, 1, 28, 28, 8),
            (2, 3, 9, 17, 5),
            (2, 4, 5, 16, 3),
            (1, 2, 3, 70, 2),
            (2, 1, 1, 1, 4),
        ] {
            let g = ConvGeom::new(n, c_in, h, w, c_out, 3, 1, 1).unwrap();
            let (x, dy) = (data(n * g.in_img(), 1), data(n * g.out_img(), 2));
            let want = reference(&g, &x, &dy);
            let mut got = vec![0.5; g.weight_len()];
            backward_weight(&g, &x, &dy, &mut got);
            let terms = (n * h * w) as f64;
            for (k, (&a, &b)) in got.iter().zip(&want).enumerate() {
                // Products of values in [-1, 1]; the accumulation adds to the 0.5 already there.
                assert!(
                    (a as f64 - 0.5 - b).abs() <= 1e-6 * terms,
                    "{g:?} [{k}]: {a} vs {b}"
                );
            }
        }
    }

    /// Through a batch norm's affines, `dW` has the bits of [`backward_weight`] on the
    /// gradient the batch norm's own backward writes, with statistics from the batch and
    /// running ones, and for 1 and 3 input channels.
    #[test]
    fn through_bn_equals_the_batch_norms_backward_then_the_plain_kernel() {
        use crate::kernels::bn::{backward_from_plane_sums, grad_affines, grad_plane_sums, BnDims};
        for &(n, c_in, h, w, c_out, batch_stats) in &[
            (3, 1, 28, 28, 8, true),
            (2, 3, 9, 17, 5, true),
            (2, 1, 6, 6, 4, false),
        ] {
            let g = ConvGeom::new(n, c_in, h, w, c_out, 3, 1, 1).unwrap();
            let d = BnDims {
                n,
                c: c_out,
                hw: h * w,
            };
            let x = data(n * g.in_img(), 5);
            let (grad, bn_input) = (data(d.len(), 6), data(d.len(), 7));
            let mean = data(c_out, 8);
            let invstd: Vec<f32> = data(c_out, 9).iter().map(|v| 1.5 + v).collect();
            let gamma = data(c_out, 10);
            let mut sums = vec![(0.0, 0.0); n * c_out];
            grad_plane_sums(&grad, &bn_input, d, &mean, &mut sums);
            let (mut dgamma, mut dbeta) = (vec![0.0; c_out], vec![0.0; c_out]);
            let mut dy = grad.clone();
            backward_from_plane_sums(
                &bn_input,
                &mut dy,
                d,
                &mean,
                &invstd,
                &gamma,
                batch_stats,
                &sums,
                &mut dgamma,
                &mut dbeta,
            );
            let mut want = vec![0.25; g.weight_len()];
            backward_weight(&g, &x, &dy, &mut want);
            let affines = grad_affines(
                d,
                &mean,
                &invstd,
                &gamma,
                batch_stats,
                &sums,
                &mut dgamma,
                &mut dbeta,
            );
            let mut got = vec![0.25; g.weight_len()];
            backward_weight_through_bn(&g, &x, &grad, &bn_input, &affines, &mut got);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} batch_stats {batch_stats}"
            );
            assert!(affines.iter().all(|k| (k.b != 0.0) == batch_stats));
        }
    }

    #[test]
    fn does_not_depend_on_the_thread_count() {
        let g = ConvGeom::new(5, 1, 28, 28, 32, 3, 1, 1).unwrap();
        let (x, dy) = (data(5 * g.in_img(), 3), data(5 * g.out_img(), 4));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut dw = vec![0.0; g.weight_len()];
            pool.install(|| backward_weight(&g, &x, &dy, &mut dw));
            dw
        };
        let one = run(1);
        assert!(run(2) == one && run(3) == one);
    }
}
