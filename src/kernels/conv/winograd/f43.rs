//! The input gradient of 3×3 "same" convs by Winograd F(4×4, 3×3): 36 GEMMs per group of
//! images instead of F(2×2, 3×3)'s 16, each over a quarter of the tiles, so 36/64 of
//! [`super`]'s GEMM work, and 2.25 instead of 4 transformed values stored per output.
//!
//! Each 4×4 block of `dX` is `Aᵀ·[(G·w'·Gᵀ) ⊙ (Bᵀ·d·B)]·A`, `d` the 6×6 window of the padded
//! `dY` around it and `w'` the flipped, transposed weight (see [`super`]), with the
//! interpolation points 0, ±1, ±2 (Lavin & Gray 2016):
//!
//! ```text
//! Bᵀ = [4  0 −5  0 1 0]   G = [ 1/4     0    0]   Aᵀ = [1 1  1 1  1 0]
//!      [0 −4 −4  1 1 0]       [−1/6 −1/6 −1/6]        [0 1 −1 2 −2 0]
//!      [0  4 −4 −1 1 0]       [−1/6  1/6 −1/6]        [0 1  1 4  4 0]
//!      [0 −2 −1  2 1 0]       [1/24 1/12  1/6]        [0 1 −1 8 −8 1]
//!      [0  2 −1 −2 1 0]       [1/24 −1/12 1/6]
//!      [0  4  0 −5 0 1]       [   0    0    1]
//! ```
//!
//! The rounding grows with the larger coefficients: in f32 over 512 channels the error stayed
//! below 1e-7 of `Σ|products|` (checked against PyTorch in f64), inside the kernels'
//! `1e-5·Σ|products|` test bound.
//!
//! The arithmetic of a transform (`bt`, `at`) is written once, generic over `Lanes`:
//! the portable loops run it on `f32`, the AVX-512 transforms on a vector with a lane per
//! tile, in the same order, so both give the same bits (tested). Both apply `Bᵀ` to the rows
//! of a window first (whole padded rows at once), then to its columns.

use super::super::{ConvGeom, OutputGrad};
use super::{input_gradient, transformed_conv, InputVariant, Transforms};
use crate::kernels::bn::{self, PlaneMoments};
use rayon::prelude::*;
use std::ops::{Add, Mul, Sub};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Most tiles in one tile row of the portable transforms: `⌈MAX_WIDTH / 4⌉`.
const MAX_TILES: usize = super::MAX_WIDTH.div_ceil(4);

/// Narrowest plane for which [`preferred`] picks this path over F(2×2, 3×3). Measured with
/// criterion `conv2d/dx` against `dx_f2x2` (see `docs/perf.md`): at 8×8 (ResNet-19's 512
/// channels, two tiles a row) F(4×4) was no faster at 1 thread (132 vs 129 ms) and slower at
/// 2 (82 vs 70 ms); from 14 wide on it wins at both.
pub const MIN_WIDTH: usize = 12;

/// True if [`super::backward_input`] takes this path for `g`: the conv [`super::fits`], has at
/// least [`super::MIN_CHANNELS`] channels each way, is at least [`MIN_WIDTH`] wide, and the
/// AVX-512 transforms apply (the portable ones are the tests' reference, not a fast path).
pub fn preferred(g: &ConvGeom) -> bool {
    super::preferred(g) && g.w >= MIN_WIDTH && Transforms::detect(g) != Transforms::Portable
}

/// Values a transform works on: `f32`, or a vector of them (a lane per tile).
pub(super) trait Lanes:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self>
{
    /// Every lane `x`.
    fn splat(x: f32) -> Self;
}

impl Lanes for f32 {
    #[inline(always)]
    fn splat(x: f32) -> Self {
        x
    }
}

impl Lanes for wide::f32x16 {
    #[inline(always)]
    fn splat(x: f32) -> Self {
        wide::f32x16::splat(x)
    }
}

/// `Bᵀ·x`: the six transformed values of one window row or column.
#[inline(always)]
pub(super) fn bt<T: Lanes>(x: [T; 6]) -> [T; 6] {
    let [x0, x1, x2, x3, x4, x5] = x;
    let (two, four, five) = (T::splat(2.0), T::splat(4.0), T::splat(5.0));
    // Rows 1–4 share `x4 − 4·x2`, `x3 − 4·x1`, `x4 − x2` and `2·(x3 − x1)`.
    let (a, b) = (x4 - four * x2, x3 - four * x1);
    let (c, d) = (x4 - x2, two * (x3 - x1));
    [
        four * x0 - five * x2 + x4,
        a + b,
        a - b,
        c + d,
        c - d,
        four * x1 - five * x3 + x5,
    ]
}

/// `Aᵀ·x`: four outputs from six transformed values.
#[inline(always)]
pub(super) fn at<T: Lanes>(x: [T; 6]) -> [T; 4] {
    let [x0, x1, x2, x3, x4, x5] = x;
    let (p, q) = (x1 + x2, x1 - x2);
    let (r, s) = (x3 + x4, x3 - x4);
    [
        x0 + p + r,
        q + T::splat(2.0) * s,
        p + T::splat(4.0) * r,
        q + T::splat(8.0) * s + x5,
    ]
}

/// `G·x`: six values from one kernel row or column.
fn g3(x: [f32; 3]) -> [f32; 6] {
    [
        x[0] / 4.0,
        -(x[0] + x[1] + x[2]) / 6.0,
        -(x[0] - x[1] + x[2]) / 6.0,
        x[0] / 24.0 + x[1] / 12.0 + x[2] / 6.0,
        x[0] / 24.0 - x[1] / 12.0 + x[2] / 6.0,
        x[2],
    ]
}

/// `Ŵ[o][ξ][c] = (G·w'·Gᵀ)[ξ]` for `w'[a][b] = W[o][c][2−a][2−b]`: `Ŵ_ξ` is the `C_in × C_out`
/// matrix at `ξ·C_in`, stored by columns `36·C_in` apart (as in [`super`]).
fn transform_weight(g: &ConvGeom, weight: &[f32], out: &mut [f32]) {
    let ci = g.c_in;
    transform_kernels(g.c_out, ci, out, |o, c| {
        let k = &weight[(o * ci + c) * 9..][..9];
        std::array::from_fn(|i| k[8 - i])
    });
}

/// The forward's [`transform_weight`]: the forward of `g` is the input gradient of `g` with
/// its channel counts swapped and the weight `W'[c][o] = W[o][c]` rotated by 180°, so the
/// strips run over input channels and the kernels are not flipped:
/// `Ŵ[c][ξ][o] = (G·W[o][c]·Gᵀ)[ξ]`, `Ŵ_ξ` the `C_out × C_in` matrix at `ξ·C_out`.
fn transform_weight_forward(g: &ConvGeom, weight: &[f32], out: &mut [f32]) {
    let ci = g.c_in;
    transform_kernels(g.c_in, g.c_out, out, |c, o| {
        let k = &weight[(o * ci + c) * 9..][..9];
        std::array::from_fn(|i| k[i])
    });
}

/// `out[(s·36 + ξ)·per + j] = (G·w·Gᵀ)[ξ]` for `w = kernel(s, j)` (row-major 3×3), `strips`
/// strips of `36·per` floats.
fn transform_kernels(
    strips: usize,
    per: usize,
    out: &mut [f32],
    kernel: impl Fn(usize, usize) -> [f32; 9] + Sync,
) {
    out[..strips * 36 * per]
        .par_chunks_mut(36 * per)
        .enumerate()
        .for_each(|(s, strip)| {
            for j in 0..per {
                let k = kernel(s, j);
                // G on the columns of w, then on the rows of the result.
                let col = [0, 1, 2].map(|b| g3([k[b], k[3 + b], k[6 + b]]));
                for i in 0..6 {
                    let u = g3([col[0][i], col[1][i], col[2][i]]);
                    for (jj, &v) in u.iter().enumerate() {
                        strip[(6 * i + jj) * per + j] = v;
                    }
                }
            }
        });
}

/// `V[ξ][ty·tw + tx] = (Bᵀ·d·B)[ξ]` for every 6×6 window `d` (rows and columns from
/// `4·ty − 1`, `4·tx − 1`; zeros outside) of one `h × w` plane, `V_ξ` at `ξ·ld`.
fn transform_input(plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    // The padded columns a tile row reads: `p[x + 1] = row[x]`.
    let n = 4 * tw + 2;
    let mut rows = [[0.0f32; 4 * MAX_TILES + 2]; 6];
    let mut vert = [[0.0f32; 4 * MAX_TILES + 2]; 6];
    for ty in 0..th {
        for (r, p) in rows.iter_mut().enumerate() {
            p[..n].fill(0.0);
            let y = (4 * ty + r).wrapping_sub(1);
            if y < h {
                p[1..w + 1].copy_from_slice(&plane[y * w..][..w]);
            }
        }
        // Bᵀ down the six rows, column by column.
        for x in 0..n {
            let u = bt(std::array::from_fn(|r| rows[r][x]));
            for (vr, &val) in vert.iter_mut().zip(&u) {
                vr[x] = val;
            }
        }
        // B along each transformed row, tile by tile.
        for (i, vr) in vert.iter().enumerate() {
            for t in 0..tw {
                let u = bt(vr[4 * t..4 * t + 6].try_into().unwrap());
                for (j, &val) in u.iter().enumerate() {
                    v[(6 * i + j) * ld + ty * tw + t] = val;
                }
            }
        }
    }
}

/// The 4×4 output blocks `Aᵀ·M·A` of one `h × w` plane from `M[ξ][ty·tw + tx]` (`M_ξ` at
/// `ξ·ld`), clipped at the plane's edges (every element of `out` written).
fn transform_output(m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    // `rows[a][tx][j]`: row a of block tx after Aᵀ down the columns of M.
    let mut rows = [[[0.0f32; 6]; MAX_TILES]; 4];
    let mut line = [0.0f32; 4 * MAX_TILES];
    for ty in 0..th {
        let base = ty * tw;
        for j in 0..6 {
            for t in 0..tw {
                let s = at(std::array::from_fn(|i| m[(6 * i + j) * ld + base + t]));
                for (a, &val) in s.iter().enumerate() {
                    rows[a][t][j] = val;
                }
            }
        }
        for (a, row) in rows.iter().enumerate() {
            let oy = 4 * ty + a;
            if oy >= h {
                break;
            }
            for (t, x) in row[..tw].iter().enumerate() {
                line[4 * t..4 * t + 4].copy_from_slice(&at(*x));
            }
            out[oy * w..][..w].copy_from_slice(&line[..w]);
        }
    }
}

/// F(4×4)'s tile transforms: the portable loops, or AVX-512 where [`super`]'s detection
/// picks its AVX-512 transforms (the same condition: at most 32 wide, AVX-512F).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct F43(pub(super) Transforms);

impl InputVariant for F43 {
    const TILE: usize = 4;
    const COLS: usize = COLS;
    fn weight(g: &ConvGeom, weight: &[f32], out: &mut [f32]) {
        transform_weight(g, weight, out);
    }
    fn input(self, plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
        match self.0 {
            Transforms::Portable => transform_input(plane, h, w, v, ld),
            // SAFETY: `Avx512` is only chosen for planes ≤ 32 wide on a CPU with AVX-512F;
            // the slice bounds are asserted inside.
            #[cfg(target_arch = "x86_64")]
            Transforms::Avx512 => unsafe { avx512::transform_input(plane, h, w, v, ld) },
        }
    }
    fn output(self, m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
        match self.0 {
            Transforms::Portable => transform_output(m, ld, h, w, out),
            // SAFETY: as for `input`.
            #[cfg(target_arch = "x86_64")]
            Transforms::Avx512 => unsafe { avx512::transform_output(m, ld, h, w, out) },
        }
    }
}

/// Target tile columns per GEMM: images whose tile count is smaller are grouped.
pub const COLS: usize = 256;

/// `dx ← ∂L/∂x` from `dy = ∂L/∂y` by F(4×4, 3×3) for a conv that [`super::fits`] (`dx` overwritten,
/// never read); the contract of [`super::backward_input`].
///
/// # Panics
/// If `g` does not fit or a slice length disagrees with `g`.
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    input_gradient(
        F43(Transforms::detect(g)),
        g,
        OutputGrad::Dense(dy),
        weight,
        dx,
    );
}

/// `y ← conv(x, W) + bias` by F(4×4, 3×3) for a conv that [`super::fits`]; the contract of
/// [`crate::kernels::conv::forward`]. Runs as the input gradient of the conv with the channel
/// counts swapped (its weight transposed, not flipped), so the forward shares its transforms and
/// GEMMs. The result differs from im2col's in rounding only (the tests' bound).
///
/// # Panics
/// If `g` does not fit, a slice length disagrees with `g`, or `bias` is not `C_out` long.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    forward_with(F43(Transforms::detect(g)), g, x, weight, bias, y, None);
}

/// [`forward`] that also writes the [`PlaneMoments`] of every output plane to `moments`
/// (`N·C_out`, image-major): the bits [`bn::plane_moments`] gives on `y`'s planes, taken as
/// each plane is written (with a bias, as it is added), so a batch norm on `y` need not read
/// it for its statistics ([`bn::stats_from_moments`]).
///
/// # Panics
/// As [`forward`]; if `moments` is not `N·C_out` long.
pub fn forward_with_moments(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    moments: &mut [PlaneMoments],
) {
    assert_eq!(
        moments.len(),
        g.n * g.c_out,
        "winograd forward: moments length"
    );
    forward_with(
        F43(Transforms::detect(g)),
        g,
        x,
        weight,
        bias,
        y,
        Some(moments),
    );
}

/// [`forward`] with the transforms `tf` (and [`forward_with_moments`]' `moments`).
fn forward_with(
    tf: F43,
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    moments: Option<&mut [PlaneMoments]>,
) {
    assert!(
        super::fits(g),
        "winograd: needs a 3x3 stride-1 pad-1 conv, got {g:?}"
    );
    assert!(
        x.len() == g.n * g.in_img()
            && weight.len() == g.weight_len()
            && y.len() == g.n * g.out_img()
            && bias.is_none_or(|b| b.len() == g.c_out),
        "winograd forward: slice lengths do not match {g:?}"
    );
    if g.n == 0 {
        return;
    }
    // The swapped geometry: `x` plays `dY` (C_in channels), `y` plays `dX` (C_out).
    let swapped = ConvGeom {
        c_in: g.c_out,
        c_out: g.c_in,
        ..*g
    };
    let mut wt = crate::buffer_pool::overwritable(36 * g.c_in * g.c_out);
    transform_weight_forward(g, weight, &mut wt);
    // With a bias the moments are of the planes after it is added.
    let (in_transform, after_bias) = match bias {
        Some(_) => (None, moments),
        None => (moments, None),
    };
    transformed_conv(tf, &swapped, OutputGrad::Dense(x), &wt, y, in_transform);
    crate::buffer_pool::give_back(wt);
    if let Some(b) = bias {
        let plane = g.oh * g.ow;
        let mut per_image: Vec<Option<&mut [PlaneMoments]>> = match after_bias {
            Some(m) => m.chunks_mut(g.c_out).map(Some).collect(),
            None => (0..g.n).map(|_| None).collect(),
        };
        y.par_chunks_mut(g.out_img())
            .zip(per_image.par_iter_mut())
            .for_each(|(img, moments)| {
                for (c, (p, &bo)) in img.chunks_exact_mut(plane).zip(b).enumerate() {
                    p.iter_mut().for_each(|v| *v += bo);
                    if let Some(m) = moments.as_deref_mut() {
                        m[c] = bn::plane_moments(p);
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: &mut u32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (*seed >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The direct correlation `dX[c][y][x] = Σ dY[o][y+1−a][x+1−b]·W[o][c][a][b]` in f64,
    /// with `Σ|products|` for the error bound.
    fn direct(g: &ConvGeom, dy: &[f32], w: &[f32]) -> Vec<(f64, f64)> {
        let mut out = vec![(0.0, 0.0); g.n * g.in_img()];
        for n in 0..g.n {
            for c in 0..g.c_in {
                for y in 0..g.h {
                    for x in 0..g.w {
                        let (mut s, mut abs) = (0.0f64, 0.0f64);
                        for o in 0..g.c_out {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (oy, ox) =
                                        ((y + 1).wrapping_sub(a), (x + 1).wrapping_sub(b));
                                    if oy < g.h && ox < g.w {
                                        let p = dy[((n * g.c_out + o) * g.h + oy) * g.w + ox]
                                            as f64
                                            * w[((o * g.c_in + c) * 3 + a) * 3 + b] as f64;
                                        s += p;
                                        abs += p.abs();
                                    }
                                }
                            }
                        }
                        out[((n * g.c_in + c) * g.h + y) * g.w + x] = (s, abs);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn forward_matches_the_reference_convolution_and_the_avx512_bits_match_the_portable() {
        use crate::kernels::conv::tests::{assert_close, rand_vec, reference};
        let mut seed = 7u64;
        // mnist-cnn's conv2 shape with a short last image group, odd sizes (edge tiles partly
        // outside), channel counts off the GEMM blocks, a 1×1 plane, the widest AVX-512 plane.
        for &(n, ci, h, w, co) in &[
            (5, 32, 14, 14, 64),
            (3, 5, 7, 13, 9),
            (2, 3, 1, 1, 2),
            (2, 4, 9, 32, 6),
            (70, 2, 8, 8, 3),
        ] {
            let g = ConvGeom::new(n, ci, h, w, co, 3, 1, 1).unwrap();
            let x = rand_vec(g.n * g.in_img(), &mut seed);
            let wt = rand_vec(g.weight_len(), &mut seed);
            let b = rand_vec(g.c_out, &mut seed);
            let dy = vec![0.0; g.n * g.out_img()];
            let want = reference(&g, &x, &wt, &b, &dy).y;
            let run = |tf| {
                let mut y = vec![f32::NAN; g.n * g.out_img()];
                forward_with(tf, &g, &x, &wt, Some(&b), &mut y, None);
                y
            };
            let portable = run(F43(Transforms::Portable));
            assert_close(&format!("{n}x{ci}x{h}x{w}->{co} y"), &portable, &want, &[]);
            #[cfg(target_arch = "x86_64")]
            if Transforms::detect(&g) == Transforms::Avx512 {
                let same = portable
                    .iter()
                    .zip(&run(F43(Transforms::Avx512)))
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{h}x{w}: AVX-512 forward bits differ from the portable"
                );
            }
        }
    }

    /// The forward taking its output planes' moments writes the output `forward` writes and,
    /// for every plane, the bits `bn::plane_moments` gives on it: with a bias (taken after it
    /// is added) and without, with a short last image group and several tasks (70 images).
    #[test]
    fn the_moments_taken_in_the_forward_are_those_of_its_output_planes() {
        use crate::kernels::conv::tests::rand_vec;
        let mut seed = 9u64;
        for &(n, ci, h, w, co) in &[(5, 32, 14, 14, 64), (3, 5, 7, 13, 9), (70, 2, 8, 8, 3)] {
            let g = ConvGeom::new(n, ci, h, w, co, 3, 1, 1).unwrap();
            let x = rand_vec(g.n * g.in_img(), &mut seed);
            let wt = rand_vec(g.weight_len(), &mut seed);
            let b = rand_vec(g.c_out, &mut seed);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![f32::NAN; g.n * g.out_img()];
                forward(&g, &x, &wt, bias, &mut want);
                let mut y = vec![f32::NAN; want.len()];
                let mut moments = vec![PlaneMoments::default(); g.n * g.c_out];
                forward_with_moments(&g, &x, &wt, bias, &mut y, &mut moments);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&want), "{g:?} output");
                for (k, plane) in y.chunks_exact(g.oh * g.ow).enumerate() {
                    let m = bn::plane_moments(plane);
                    let same = m.mean.to_bits() == moments[k].mean.to_bits()
                        && m.m2.to_bits() == moments[k].m2.to_bits();
                    assert!(same, "{g:?} bias {} plane {k}", bias.is_some());
                }
            }
        }
    }

    #[test]
    fn matches_the_direct_correlation_and_the_avx512_bits_match_the_portable() {
        let mut seed = 11u32;
        // Widths on both sides of 16 and up to 32 (odd ones: edge tiles partly outside),
        // heights that are not multiples of 4, groups with a short last one (8×8: 4 tiles).
        for &(n, ci, h, w, co) in &[
            (2, 3, 1, 1, 2),
            (3, 5, 7, 5, 4),
            (70, 4, 8, 8, 3),
            (2, 6, 6, 16, 5),
            (2, 3, 9, 17, 7),
            (1, 4, 14, 14, 6),
            (2, 3, 18, 13, 4),
            (1, 3, 32, 32, 4),
            (2, 2, 5, 31, 3),
            (1, 2, 3, 40, 2),
        ] {
            let g = ConvGeom::new(n, ci, h, w, co, 3, 1, 1).unwrap();
            let (dy, wt) = (
                data(g.n * g.out_img(), &mut seed),
                data(g.weight_len(), &mut seed),
            );
            let want = direct(&g, &dy, &wt);
            let mut portable = vec![f32::NAN; g.n * g.in_img()];
            input_gradient(
                F43(Transforms::Portable),
                &g,
                OutputGrad::Dense(&dy),
                &wt,
                &mut portable,
            );
            for (i, (&got, &(s, abs))) in portable.iter().zip(&want).enumerate() {
                let err = (got as f64 - s).abs();
                assert!(
                    err <= 1e-5 * abs.max(1e-30),
                    "{h}x{w} element {i}: {got} vs {s} (Σ|p| {abs})"
                );
            }
            #[cfg(target_arch = "x86_64")]
            if Transforms::detect(&g) == Transforms::Avx512 {
                let mut vector = vec![f32::NAN; g.n * g.in_img()];
                input_gradient(
                    F43(Transforms::Avx512),
                    &g,
                    OutputGrad::Dense(&dy),
                    &wt,
                    &mut vector,
                );
                let same = portable
                    .iter()
                    .zip(&vector)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{h}x{w}: AVX-512 bits differ from the portable transforms"
                );
            }
        }
    }
}
