//! The forward of a 3×3, stride-1, padding-1 conv with few input channels (a stem on the raw
//! image: 1 channel for MNIST) as vector taps over flat planes, without im2col or GEMM.
//!
//! Each image is copied once into three zero-bordered flat versions per input channel: the
//! plane itself and the plane shifted one column left and right, with the column that wraps
//! around a row edge zeroed. Tap `(ky, kx)` of the 16 outputs at flat index `j` is then the
//! vector at `j + ky·W` of version `kx` (one zero row above and below stands for the vertical
//! padding), so a vector may span rows and a plane of `H·W` outputs is `⌈H·W/16⌉` vectors
//! whatever its width. A register block holds 4 output channels × 2 vectors, every tap's load
//! feeding 4 FMAs.
//!
//! Why: im2col turns a 1-channel input into a `9 × H·W` column matrix per image and hands
//! `matrixmultiply` a GEMM with `K = 9`, whose packing and short inner loop cost more than
//! the products ([`preferred`] has the figures). With the output moments ([`forward_with_moments`])
//! a training batch norm after the stem skips its own pass over the 6.4 MB output
//! (`mnist-cnn`'s B = 64), each block's planes being summed while they are in L1.
//!
//! Numerics: every output is one FMA chain from the bias over `(c, ky, kx)` in order, so results
//! differ from im2col's in rounding only; the tests bound the difference by `1e-5·Σ|products|`.
//! Each output and each plane's moments depend on its image alone, so the result does not
//! depend on the thread count.

use super::{check_lens, groups_per_task, ConvGeom};
use crate::kernels::bn::{plane_moments, PlaneMoments};
use rayon::prelude::*;
use std::cell::RefCell;
use wide::f32x16;

/// Most input channels taken here (each needs three flat copies per image).
pub const MAX_CHANNELS: usize = 4;
const LANES: usize = 16;
/// Output channels per register block.
const CO_BLOCK: usize = 4;
/// Vectors per register block: `CO_BLOCK·VECS` accumulators.
const VECS: usize = 2;

/// True if [`forward`] takes `g`: a 3×3, stride-1, padding-1 conv with at most
/// [`MAX_CHANNELS`] input channels.
pub fn applies(g: &ConvGeom) -> bool {
    g.k == 3 && g.stride == 1 && g.pad == 1 && (1..=MAX_CHANNELS).contains(&g.c_in)
}

/// True if [`super::forward`] should take this path for `g`: it [`applies`] and the input has
/// one channel. Criterion (Zen 4, 2 threads, noisy hour, alternating runs) at `mnist-cnn`'s
/// 1 → 32 stem, 28×28, 256 images: `conv2d/fwd` 2.48 / 2.31 / 2.21 ms against `fwd_im2col`'s
/// 2.96 / 2.72 / 2.54 (both bound by writing the 25.7 MB output), and with a batch norm's
/// statistics `fwd_with_moments` 2.65 / 2.30 / 2.56 against `fwd_then_bn_stats` 2.81 / 3.45 /
/// 3.38. At ResNet-19's 3 → 64 stem (27 taps) one run gave 2.09 against im2col's 2.19 ms,
/// inside the noise, so it stays on im2col.
pub fn preferred(g: &ConvGeom) -> bool {
    applies(g) && g.c_in == 1
}

/// `y = conv(x, weight) (+ bias)` for `x: [N, C_in, H, W]`, `weight: [C_out, C_in, 3, 3]`.
///
/// # Panics
/// If [`applies`] is false for `g`, or a length disagrees with `g`.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    run(g, x, weight, bias, y, None);
}

/// [`forward`], also writing each output plane's [`PlaneMoments`] into `moments` (`N·C_out`,
/// image-major): the bits of [`plane_moments`] of the planes written.
///
/// # Panics
/// As [`forward`], or if `moments` is not `N·C_out` long.
pub fn forward_with_moments(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    moments: &mut [PlaneMoments],
) {
    assert_eq!(moments.len(), g.n * g.c_out, "stem forward: moments length");
    run(g, x, weight, bias, y, Some(moments));
}

fn run(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    moments: Option<&mut [PlaneMoments]>,
) {
    assert!(applies(g), "stem forward: {g:?} not taken here");
    check_lens(g, x.len(), weight.len(), y.len(), "stem forward");
    assert!(
        bias.is_none_or(|b| b.len() == g.c_out),
        "stem forward: bias length"
    );
    if g.n == 0 {
        return;
    }
    let per = groups_per_task(g.n);
    let tasks = g.n.div_ceil(per);
    let m_chunks: Vec<Option<&mut [PlaneMoments]>> = match moments {
        Some(m) => m.chunks_mut(per * g.c_out).map(Some).collect(),
        None => (0..tasks).map(|_| None).collect(),
    };
    y.par_chunks_mut(per * g.out_img())
        .zip(x.par_chunks(per * g.in_img()))
        .zip(m_chunks)
        .for_each(|((yc, xc), mut mc)| {
            FLAT.with(|cell| {
                let flat = &mut *cell.borrow_mut();
                flat.fit(g);
                for (k, (yi, xi)) in yc
                    .chunks_mut(g.out_img())
                    .zip(xc.chunks(g.in_img()))
                    .enumerate()
                {
                    flat.load(g, xi);
                    let mi = mc.as_deref_mut().map(|m| &mut m[k * g.c_out..][..g.c_out]);
                    image(g, flat, weight, bias, yi, mi);
                }
            })
        });
}

/// An image's flat copies: for each input channel the versions for `kx` = 0, 1, 2, each
/// `(H + 2)·W` floats (a zero row above and below) plus a register block's width of slack, so
/// the loads of a plane's last block stay in bounds.
/// One per thread, reused across calls (no allocation per task).
#[derive(Default)]
struct Flat {
    data: Vec<f32>,
    len: usize,
    /// `(C_in, H, W)` the buffers are laid out for.
    shape: (usize, usize, usize),
}

thread_local! {
    static FLAT: RefCell<Flat> = RefCell::default();
}

impl Flat {
    /// Lays the buffers out for `g`, zeroed if the shape changed; for the same shape they
    /// are kept as they are (only an image's values are ever written, never the zero rows,
    /// the zeroed edge columns are rewritten by every [`Flat::load`], and the slack is
    /// never written).
    fn fit(&mut self, g: &ConvGeom) {
        let shape = (g.c_in, g.h, g.w);
        if self.shape != shape {
            self.len = (g.h + 2) * g.w + VECS * LANES;
            self.data.clear();
            self.data.resize(3 * g.c_in * self.len, 0.0);
            self.shape = shape;
        }
    }

    /// Copies image `xi` (`[C_in, H, W]`) in; the zero rows and slack stay zero.
    fn load(&mut self, g: &ConvGeom, xi: &[f32]) {
        let (h, w) = (g.h, g.w);
        for (c, plane) in xi.chunks_exact(h * w).enumerate() {
            let [left, mid, right] = self.versions_mut(c);
            for (r, row) in plane.chunks_exact(w).enumerate() {
                let at = (r + 1) * w;
                mid[at..at + w].copy_from_slice(row);
                // Tap kx = 0 reads the column to the left, 0 at the row's first column.
                left[at] = 0.0;
                left[at + 1..at + w].copy_from_slice(&row[..w - 1]);
                // Tap kx = 2 reads the column to the right, 0 at the row's last column.
                right[at..at + w - 1].copy_from_slice(&row[1..]);
                right[at + w - 1] = 0.0;
            }
        }
    }

    fn versions_mut(&mut self, c: usize) -> [&mut [f32]; 3] {
        let len = self.len;
        let (l, rest) = self.data[3 * c * len..][..3 * len].split_at_mut(len);
        let (m, r) = rest.split_at_mut(len);
        [l, m, r]
    }

    fn version(&self, c: usize, kx: usize) -> &[f32] {
        &self.data[(3 * c + kx) * self.len..][..self.len]
    }
}

fn load(s: &[f32]) -> f32x16 {
    f32x16::new(s[..LANES].try_into().expect("16 lanes"))
}

/// One image's output planes (`yi`: `[C_out, H, W]`) and, if asked, their moments (`mi`).
fn image(
    g: &ConvGeom,
    flat: &Flat,
    weight: &[f32],
    bias: Option<&[f32]>,
    yi: &mut [f32],
    mut mi: Option<&mut [PlaneMoments]>,
) {
    let (hw, ci) = (g.h * g.w, g.c_in);
    let taps = 9 * ci;
    let mut o = 0;
    while o < g.c_out {
        let block = CO_BLOCK.min(g.c_out - o);
        let planes = &mut yi[o * hw..][..block * hw];
        match block {
            CO_BLOCK => channel_block::<CO_BLOCK>(g, flat, &weight[o * taps..], bias, o, planes),
            1 => channel_block::<1>(g, flat, &weight[o * taps..], bias, o, planes),
            2 => channel_block::<2>(g, flat, &weight[o * taps..], bias, o, planes),
            _ => channel_block::<3>(g, flat, &weight[o * taps..], bias, o, planes),
        }
        if let Some(mi) = mi.as_deref_mut() {
            for (k, plane) in planes.chunks_exact(hw).enumerate() {
                mi[o + k] = plane_moments(plane);
            }
        }
        o += block;
    }
}

/// Output channels `o..o + B` (`planes`, `B` planes of `H·W`), `w` starting at channel `o`'s
/// weights.
#[inline(always)]
fn channel_block<const B: usize>(
    g: &ConvGeom,
    flat: &Flat,
    w: &[f32],
    bias: Option<&[f32]>,
    o: usize,
    planes: &mut [f32],
) {
    let (hw, width, ci) = (g.h * g.w, g.w, g.c_in);
    let taps = 9 * ci;
    let start: [f32x16; B] = std::array::from_fn(|b| f32x16::splat(bias.map_or(0.0, |v| v[o + b])));
    let mut j = 0;
    while j < hw {
        let mut acc: [[f32x16; VECS]; B] = start.map(|s| [s; VECS]);
        for c in 0..ci {
            for ky in 0..3 {
                for kx in 0..3 {
                    let src = &flat.version(c, kx)[j + ky * width..];
                    // Past the plane's last output the loads read zeros or values of the
                    // rows below into lanes that are not stored.
                    let xv: [f32x16; VECS] = std::array::from_fn(|v| load(&src[v * LANES..]));
                    for (b, a) in acc.iter_mut().enumerate() {
                        let wv = f32x16::splat(w[b * taps + (c * 3 + ky) * 3 + kx]);
                        for (av, x) in a.iter_mut().zip(&xv) {
                            *av = x.mul_add(wv, *av);
                        }
                    }
                }
            }
        }
        for (b, a) in acc.iter().enumerate() {
            let plane = &mut planes[b * hw..][..hw];
            for (v, av) in a.iter().enumerate() {
                let at = j + v * LANES;
                if at >= hw {
                    break;
                }
                let n = LANES.min(hw - at);
                if n == LANES {
                    plane[at..at + LANES].copy_from_slice(&av.to_array());
                } else {
                    plane[at..at + n].copy_from_slice(&av.to_array()[..n]);
                }
            }
        }
        j += VECS * LANES;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::stem::tests::data;

    /// The conv in f64, and `Σ|products|` per output for the error bound.
    fn reference(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let (h, wd) = (g.h as isize, g.w as isize);
        let mut y = vec![0.0; g.n * g.out_img()];
        let mut mag = vec![0.0; y.len()];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for r in 0..h {
                    for col in 0..wd {
                        let mut s = bias.map_or(0.0, |b| b[o] as f64);
                        let mut m = s.abs();
                        for c in 0..g.c_in {
                            for ky in 0..3isize {
                                for kx in 0..3isize {
                                    let (yy, xx) = (r + ky - 1, col + kx - 1);
                                    if yy < 0 || yy >= h || xx < 0 || xx >= wd {
                                        continue;
                                    }
                                    let xi =
                                        ((n * g.c_in + c) * g.h + yy as usize) * g.w + xx as usize;
                                    let wi = ((o * g.c_in + c) * 3 + ky as usize) * 3 + kx as usize;
                                    let p = x[xi] as f64 * w[wi] as f64;
                                    s += p;
                                    m += p.abs();
                                }
                            }
                        }
                        let at = ((n * g.c_out + o) * g.h + r as usize) * g.w + col as usize;
                        y[at] = s;
                        mag[at] = m;
                    }
                }
            }
        }
        (y, mag)
    }

    fn shapes() -> Vec<ConvGeom> {
        [
            // (n, c_in, h, w, c_out)
            (3, 1, 28, 28, 32),
            (2, 1, 5, 7, 6),
            (2, 1, 1, 9, 5),
            (2, 1, 9, 1, 3),
            (1, 1, 1, 1, 2),
            (2, 3, 11, 13, 7),
            (9, 4, 6, 17, 4),
        ]
        .into_iter()
        .map(|(n, c, h, w, o)| ConvGeom::new(n, c, h, w, o, 3, 1, 1).unwrap())
        .collect()
    }

    #[test]
    fn matches_the_definition() {
        for (i, g) in shapes().into_iter().enumerate() {
            let x = data(g.n * g.in_img(), 40 + i as u32);
            let w = data(g.weight_len(), 50 + i as u32);
            let b = data(g.c_out, 60 + i as u32);
            for bias in [None, Some(&b[..])] {
                let mut y = vec![f32::NAN; g.n * g.out_img()];
                forward(&g, &x, &w, bias, &mut y);
                let (want, mag) = reference(&g, &x, &w, bias);
                for (k, ((&got, &want), &mag)) in y.iter().zip(&want).zip(&mag).enumerate() {
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * mag + 1e-30,
                        "{g:?} bias {} at {k}: {got} vs {want}",
                        bias.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn the_moments_are_those_of_the_output_planes() {
        for (i, g) in shapes().into_iter().enumerate() {
            let x = data(g.n * g.in_img(), 70 + i as u32);
            let w = data(g.weight_len(), 80 + i as u32);
            let b = data(g.c_out, 90 + i as u32);
            for bias in [None, Some(&b[..])] {
                let mut y = vec![0.0; g.n * g.out_img()];
                let mut m = vec![PlaneMoments::default(); g.n * g.c_out];
                forward_with_moments(&g, &x, &w, bias, &mut y, &mut m);
                let mut plain = vec![0.0; y.len()];
                forward(&g, &x, &w, bias, &mut plain);
                assert_eq!(y, plain, "{g:?}: the moments change the output");
                for (k, plane) in y.chunks_exact(g.oh * g.ow).enumerate() {
                    assert_eq!(m[k], plane_moments(plane), "{g:?} plane {k}");
                }
            }
        }
    }

    #[test]
    fn does_not_depend_on_the_thread_count() {
        let g = ConvGeom::new(37, 1, 28, 28, 32, 3, 1, 1).unwrap();
        let (x, w) = (data(g.n * g.in_img(), 7), data(g.weight_len(), 8));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut y = vec![0.0; g.n * g.out_img()];
                let mut m = vec![PlaneMoments::default(); g.n * g.c_out];
                forward_with_moments(&g, &x, &w, None, &mut y, &mut m);
                (y, m)
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(one == run(threads), "{threads} threads");
        }
    }
}
