//! The input gradient of a 3×3, stride-1, padding-1 conv by Winograd's F(2×2, 3×3) or (in
//! [`f43`], where its AVX-512 transforms apply) F(4×4, 3×3), and (in [`weight`]) its weight
//! gradient by F(3×3, 2×2), which shares F(2×2)'s input transform.
//!
//! `dX` is a "same" correlation of `dY` with the flipped, transposed weight
//! `W'[c][o][a][b] = W[o][c][2−a][2−b]`. F(2×2, 3×3) (Lavin & Gray 2016) computes a 2×2 output
//! tile from a 4×4 input tile with 16 products instead of 36:
//! `Y = Aᵀ[(G·w·Gᵀ) ⊙ (Bᵀ·d·B)]A`. Over channels the 16 element-wise products become 16
//! independent GEMMs `M_ξ = Ŵ_ξ · V_ξ` (`C_in × C_out` times `C_out × tiles`), so the GEMM
//! work is 16/36 of im2col's, and there is no `9·C_in × P` column matrix and no col2im.
//!
//! Per task (a group of images, fixed by the shape): transform every 4×4 tile of `dY` into
//! `V` (16 matrices, tiles as columns), run the 16 GEMMs into `M`, and transform each 4×4 of
//! `M` back into a 2×2 block of `dX` (`InputVariant` abstracts the tile size, so F(4×4)
//! shares this driver). The weight transform runs once per call. Tile edges
//! past the image read zeros (the padding) and write nothing, so odd sizes work.
//!
//! Numerics: the transforms add and halve, so the result differs from im2col's in rounding
//! only; the tests bound it by the same `1e-5 · Σ|products|` as the direct kernels.

use super::{ConvGeom, OutputGrad};
use rayon::prelude::*;
use transformed::{transform_group, transformed_conv, TilePlan};

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod f43;
#[cfg(target_arch = "x86_64")]
mod joint;
#[cfg(target_arch = "x86_64")]
mod outer;
mod tile_gemm;
mod transformed;
pub mod weight;
#[cfg(target_arch = "x86_64")]
mod weight4;

pub use weight::backward_weight;

/// Which tile transforms run: the portable loops, or AVX-512 (planes at most 32 wide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transforms {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Transforms {
    fn detect(g: &ConvGeom) -> Self {
        #[cfg(target_arch = "x86_64")]
        if g.w <= avx512::MAX_W && std::arch::is_x86_feature_detected!("avx512f") {
            return Transforms::Avx512;
        }
        let _ = g;
        Transforms::Portable
    }

    fn input(self, plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
        match self {
            Transforms::Portable => transform_input(plane, h, w, v, ld),
            // SAFETY: `Avx512` is only chosen for planes ≤ 32 wide on a CPU with AVX-512F;
            // the slice bounds are asserted inside.
            #[cfg(target_arch = "x86_64")]
            Transforms::Avx512 => unsafe { avx512::transform_input(plane, h, w, v, ld) },
        }
    }

    fn grad(self, plane: &[f32], h: usize, w: usize, u: &mut [f32], ld: usize) {
        match self {
            Transforms::Portable => weight::transform_grad(plane, h, w, u, ld),
            // SAFETY: as for `input`.
            #[cfg(target_arch = "x86_64")]
            Transforms::Avx512 => unsafe { avx512::transform_grad(plane, h, w, u, ld) },
        }
    }

    fn output(self, m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
        match self {
            Transforms::Portable => transform_output(m, ld, h, w, out),
            // SAFETY: as for `input`.
            #[cfg(target_arch = "x86_64")]
            Transforms::Avx512 => unsafe { avx512::transform_output(m, ld, h, w, out) },
        }
    }
}

/// Fewest input and output channels for which [`preferred`] picks Winograd. Measured with
/// criterion `conv2d/dx` against `dx_im2col` (and `dw` against `dw_im2col`): 32 → 64
/// channels at 14×14 (mnist-cnn's conv2) −17 % (−25 %), 128–512 channels (ResNet-19) −40 %
/// (−43 to −51 %); with 1 or 3 channels the transforms cost more than the 16-row GEMMs save
/// (the input gradient 4× slower).
pub const MIN_CHANNELS: usize = 32;

/// True if [`backward_input`] should be used for `g`: it [`fits`] and has at least
/// [`MIN_CHANNELS`] input and output channels.
pub fn preferred(g: &ConvGeom) -> bool {
    fits(g) && g.c_in.min(g.c_out) >= MIN_CHANNELS
}

/// True if [`backward_weight`] should be used for `g`: it is [`preferred`] and the AVX-512
/// transforms apply (at most 32 wide, AVX-512F). With the portable 2×2 gradient transform
/// mnist-cnn's conv2 weight gradient was slower than im2col's (12.5 vs 9.6 ms), so without
/// them the weight gradient stays on im2col; the input gradient's portable transforms still
/// won (67 vs 83 ms at ResNet-19 layer 1).
pub fn preferred_for_weight(g: &ConvGeom) -> bool {
    preferred(g) && Transforms::detect(g) != Transforms::Portable
}

/// Extra floats between the 16 transformed matrices (one cache line).
const XI_PAD: usize = 16;

/// Target tile columns per GEMM: images whose tile count is smaller are grouped.
pub const WINOGRAD_COLS: usize = 256;

/// True if [`backward_input`] handles `g`: a 3×3, stride-1, padding-1 conv.
pub fn fits(g: &ConvGeom) -> bool {
    g.k == 3 && g.stride == 1 && g.pad == 1 && g.w <= MAX_WIDTH
}

/// Widest plane [`backward_input`] takes (its row buffers live on the stack).
pub const MAX_WIDTH: usize = 2 * MAX_SPLIT - 2;
/// Length of one even or odd half of a split row: `⌈W/2⌉ + 1` elements.
const MAX_SPLIT: usize = 65;

/// Tile rows and columns of one `H × W` plane: `(⌈H/2⌉, ⌈W/2⌉)`.
fn tile_grid(g: &ConvGeom) -> (usize, usize) {
    (g.h.div_ceil(2), g.w.div_ceil(2))
}

/// Images per GEMM group: enough for [`WINOGRAD_COLS`] tile columns, at most `n`.
fn group(g: &ConvGeom) -> usize {
    let (th, tw) = tile_grid(g);
    (WINOGRAD_COLS / (th * tw)).clamp(1, g.n.max(1))
}

/// `Ŵ[o][ξ][c] = (G·w'·Gᵀ)[ξ]` for `w'[a][b] = W[o][c][2−a][2−b]`, written to `out`
/// (`C_out·16·C_in` floats). `Ŵ_ξ` is the `C_in × C_out` matrix at `ξ·C_in` stored by columns
/// (`16·C_in` apart): `matrixmultiply` packs a column-major left operand with contiguous
/// copies, a row-major one element by element (15 % of the kernel's time when it was).
fn transform_weight(g: &ConvGeom, weight: &[f32], out: &mut [f32]) {
    let ci = g.c_in;
    out.par_chunks_mut(16 * ci)
        .enumerate()
        .for_each(|(o, strip)| {
            for (c, k) in weight[o * ci * 9..][..ci * 9].chunks_exact(9).enumerate() {
                // w'[a][b] = k[(2−a)·3 + (2−b)]: the kernel rotated by 180°.
                let w = |a: usize, b: usize| k[(2 - a) * 3 + (2 - b)];
                // G·w' (4×3), then (G·w')·Gᵀ (4×4).
                let col = [0, 1, 2].map(|b| {
                    let (w0, w1, w2) = (w(0, b), w(1, b), w(2, b));
                    [w0, 0.5 * (w0 + w1 + w2), 0.5 * (w0 - w1 + w2), w2]
                });
                let gw = [0, 1, 2, 3].map(|i| [col[0][i], col[1][i], col[2][i]]);
                for (i, r) in gw.iter().enumerate() {
                    let u = [
                        r[0],
                        0.5 * (r[0] + r[1] + r[2]),
                        0.5 * (r[0] - r[1] + r[2]),
                        r[2],
                    ];
                    for (j, &v) in u.iter().enumerate() {
                        strip[(4 * i + j) * ci + c] = v;
                    }
                }
            }
        });
}

/// Splits input row `iy` of `plane` (zeros outside `0..h`) into the even and odd positions of
/// the padded row `p[j] = row[j − 1]`: `even[k] = p[2k]`, `odd[k] = p[2k + 1]`, `tw + 1` each.
fn split_row(plane: &[f32], w: usize, h: usize, iy: isize, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    if iy < 0 || iy as usize >= h {
        return;
    }
    let row = &plane[iy as usize * w..][..w];
    for (x, &v) in row.iter().enumerate() {
        // p index x + 1.
        if x % 2 == 0 {
            odd[x / 2] = v;
        } else {
            even[x / 2 + 1] = v;
        }
    }
}

/// `Bᵀ·d·B` of every 4×4 tile of one plane (`dY` for the input gradient, `X` for the weight
/// gradient), written to `v[ξ·ld + tile]`.
fn transform_input(plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
    let tw = w.div_ceil(2);
    let th = h.div_ceil(2);
    let n = tw + 1;
    // Four split rows (even half, odd half), then their vertical transforms.
    let mut rows = [[0.0f32; 2 * MAX_SPLIT]; 4];
    let mut vert = [[0.0f32; 2 * MAX_SPLIT]; 4];
    for ty in 0..th {
        for (r, buf) in rows.iter_mut().enumerate() {
            let (e, o) = buf[..2 * n].split_at_mut(n);
            split_row(plane, w, h, 2 * ty as isize - 1 + r as isize, e, o);
        }
        // Bᵀ on the rows: r0 − r2, r1 + r2, r2 − r1, r1 − r3 (even and odd halves alike).
        for k in 0..2 * n {
            let (r0, r1, r2, r3) = (rows[0][k], rows[1][k], rows[2][k], rows[3][k]);
            vert[0][k] = r0 - r2;
            vert[1][k] = r1 + r2;
            vert[2][k] = r2 - r1;
            vert[3][k] = r1 - r3;
        }
        let base = ty * tw;
        for (i, t) in vert.iter().enumerate() {
            let (e, o) = t[..2 * n].split_at(n);
            // B on the columns: columns 2tx − 1 .. 2tx + 2 are e[tx], o[tx], e[tx+1], o[tx+1].
            let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
            let at = |j: usize| (4 * i + j) * ld + base;
            for (x, d) in v[at(0)..][..tw].iter_mut().enumerate() {
                *d = e0[x] - e1[x];
            }
            for (x, d) in v[at(1)..][..tw].iter_mut().enumerate() {
                *d = o0[x] + e1[x];
            }
            for (x, d) in v[at(2)..][..tw].iter_mut().enumerate() {
                *d = e1[x] - o0[x];
            }
            for (x, d) in v[at(3)..][..tw].iter_mut().enumerate() {
                *d = o0[x] - o1[x];
            }
        }
    }
}

/// `Aᵀ·m·A` of every tile column of `m[ξ·ld + tile]` into the `h × w` plane `out` (every
/// element written).
fn transform_output(m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
    let tw = w.div_ceil(2);
    let th = h.div_ceil(2);
    let mut s = [[[0.0f32; 64]; 4]; 2];
    for ty in 0..th {
        let base = ty * tw;
        let row = |xi: usize| &m[xi * ld + base..][..tw];
        // Aᵀ on the rows: s0 = m0 + m1 + m2, s1 = m1 − m2 − m3, per column j.
        let [s0, s1] = &mut s;
        for (j, (s0, s1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
            let (m0, m1, m2, m3) = (row(j), row(4 + j), row(8 + j), row(12 + j));
            for tx in 0..tw {
                s0[tx] = m0[tx] + m1[tx] + m2[tx];
                s1[tx] = m1[tx] - m2[tx] - m3[tx];
            }
        }
        for (dy, sr) in s.iter().enumerate() {
            let oy = 2 * ty + dy;
            if oy >= h {
                break;
            }
            let dst = &mut out[oy * w..][..w];
            // A on the columns: y0 = s0 + s1 + s2, y1 = s1 − s2 − s3.
            for tx in 0..tw {
                let y0 = sr[0][tx] + sr[1][tx] + sr[2][tx];
                dst[2 * tx] = y0;
                if 2 * tx + 1 < w {
                    dst[2 * tx + 1] = sr[1][tx] - sr[2][tx] - sr[3][tx];
                }
            }
        }
    }
}

/// `dx ← ∂L/∂x` from `dy = ∂L/∂y` for a conv that [`fits`] (`dx` overwritten, never read),
/// by F(4×4, 3×3) ([`f43`]) where [`f43::preferred`], otherwise by F(2×2, 3×3).
///
/// Deterministic for any thread count: groups are fixed by the shape.
///
/// # Panics
/// If `g` does not fit or a slice length disagrees with `g`.
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    if f43::preferred(g) {
        f43::backward_input(g, dy, weight, dx);
    } else {
        backward_input_f2x2(g, dy, weight, dx);
    }
}

/// [`backward_input`] by F(2×2, 3×3) whatever the shape (for benches and tests).
///
/// # Panics
/// As [`backward_input`].
pub fn backward_input_f2x2(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    input_gradient(Transforms::detect(g), g, OutputGrad::Dense(dy), weight, dx);
}

/// [`backward_input`] from `dy` given as an [`OutputGrad`] (formed plane by plane if it
/// comes through a batch norm): the same bits as [`backward_input`] on the formed `∂L/∂y`.
///
/// # Panics
/// As [`backward_input`], or if `dy`'s parts disagree.
pub fn backward_input_from(g: &ConvGeom, dy: OutputGrad, weight: &[f32], dx: &mut [f32]) {
    if f43::preferred(g) {
        input_gradient(f43::F43(Transforms::detect(g)), g, dy, weight, dx);
    } else {
        input_gradient(Transforms::detect(g), g, dy, weight, dx);
    }
}

/// True if [`backward_joint`] takes `g` on this CPU: both gradients by F(4×4)-sized tiles
/// (the input gradient's [`f43`] and the weight gradient's F(3×3, 4×4)), in one pass.
pub fn joint_applies(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        joint::applies(g)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// `dx ← ∂L/∂x` (overwritten) and `dw += ∂L/∂W` in one pass over `dy`, chunk by chunk of
/// images formed once in L2: the bits of [`backward_input_from`] and of the weight gradient
/// ([`weight::backward_weight`], or [`weight::backward_weight_spikes_from`] for spike bits),
/// with `∂L/∂y` read from memory once instead of twice.
///
/// # Panics
/// If [`joint_applies`] is false for `g`, or a length disagrees with `g`.
pub fn backward_joint(
    g: &ConvGeom,
    x: super::direct::Input,
    dy: OutputGrad,
    weight: &[f32],
    dw: &mut [f32],
    dx: &mut [f32],
    ws: &mut super::ConvWorkspace,
) {
    #[cfg(target_arch = "x86_64")]
    joint::backward(g, x, dy, weight, dw, dx, ws);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, dy, weight, dw, dx, ws);
        panic!("winograd joint backward: not taken for {g:?}");
    }
}

/// One Winograd algorithm F(m×m, 3×3) for the input gradient: its tile size and transforms.
pub(super) trait InputVariant: Copy + Sync {
    /// Output tile edge `m`; the input tile is `(m + 2)²` and there are `(m + 2)²` GEMMs.
    const TILE: usize;
    /// Target tile columns per GEMM: images whose tile count is smaller are grouped.
    const COLS: usize;
    /// The transformed weight `Ŵ[o][ξ][c]`: `Ŵ_ξ` the `C_in × C_out` matrix at `ξ·C_in`,
    /// stored by columns `(m + 2)²·C_in` apart.
    fn weight(g: &ConvGeom, weight: &[f32], out: &mut [f32]);
    /// `Bᵀ·d·B` of every tile of one `dY` plane into `v[ξ·ld + tile]`.
    fn input(self, plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize);
    /// `Aᵀ·m·A` of every tile of `m[ξ·ld + tile]` into the `h × w` plane `out` (every element
    /// written).
    fn output(self, m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]);
}

impl InputVariant for Transforms {
    const TILE: usize = 2;
    const COLS: usize = WINOGRAD_COLS;
    fn weight(g: &ConvGeom, weight: &[f32], out: &mut [f32]) {
        transform_weight(g, weight, out);
    }
    fn input(self, plane: &[f32], h: usize, w: usize, v: &mut [f32], ld: usize) {
        Transforms::input(self, plane, h, w, v, ld);
    }
    fn output(self, m: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
        Transforms::output(self, m, ld, h, w, out);
    }
}

/// The input gradient by the Winograd algorithm `tf`: per group of images, the tile
/// transforms of `dY` into `V`, `(m + 2)²` GEMMs `M_ξ = Ŵ_ξ·V_ξ`, the output transforms of
/// `M` into `dX`.
fn input_gradient<V: InputVariant>(
    tf: V,
    g: &ConvGeom,
    dy: OutputGrad,
    weight: &[f32],
    dx: &mut [f32],
) {
    assert!(
        fits(g),
        "winograd: needs a 3x3 stride-1 pad-1 conv, got {g:?}"
    );
    assert!(
        dx.len() == g.n * g.in_img()
            && weight.len() == g.weight_len()
            && dy.len() == g.n * g.out_img()
            && dy.is_consistent(g.c_out),
        "winograd backward_input: slice lengths do not match {g:?}"
    );
    if g.n == 0 {
        return;
    }
    let xis = (V::TILE + 2) * (V::TILE + 2);
    let mut wt = crate::buffer_pool::overwritable(xis * g.c_in * g.c_out);
    V::weight(g, weight, &mut wt);
    transformed_conv(tf, g, dy, &wt, dx, None);
    crate::buffer_pool::give_back(wt);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_transforms_give_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut seed = 3u32;
            // Widths on both sides of 16 and up to 32, odd and even heights.
            for &(h, w) in &[
                (1, 1),
                (3, 5),
                (8, 8),
                (7, 16),
                (5, 17),
                (14, 14),
                (32, 32),
                (9, 31),
            ] {
                let g = ConvGeom::new(3, 5, h, w, 6, 3, 1, 1).unwrap();
                let mut data = |n: usize| -> Vec<f32> {
                    (0..n)
                        .map(|_| {
                            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                            (seed >> 8) as f32 / (1 << 23) as f32 - 1.0
                        })
                        .collect()
                };
                let (dy, w8) = (data(g.n * g.out_img()), data(g.weight_len()));
                let mut a = vec![f32::NAN; g.n * g.in_img()];
                let mut b = vec![f32::NAN; g.n * g.in_img()];
                input_gradient(
                    Transforms::Portable,
                    &g,
                    OutputGrad::Dense(&dy),
                    &w8,
                    &mut a,
                );
                input_gradient(Transforms::Avx512, &g, OutputGrad::Dense(&dy), &w8, &mut b);
                let same =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same(&a, &b), "{h}x{w} input gradient");
                assert!(
                    a.iter().all(|v| v.is_finite()),
                    "{h}x{w}: element not written"
                );
                // The weight gradient's transforms (the input one shared, the 2×2 one its own).
                let x = data(g.n * g.in_img());
                let mut ws = super::super::ConvWorkspace::default();
                let (mut dwa, mut dwb) = (w8.clone(), w8.clone());
                weight::backward_weight_with(
                    Transforms::Portable,
                    &g,
                    super::super::direct::Input::Dense(&x),
                    OutputGrad::Dense(&dy),
                    &mut dwa,
                    &mut ws,
                );
                weight::backward_weight_with(
                    Transforms::Avx512,
                    &g,
                    super::super::direct::Input::Dense(&x),
                    OutputGrad::Dense(&dy),
                    &mut dwb,
                    &mut ws,
                );
                assert!(same(&dwa, &dwb), "{h}x{w} weight gradient");
            }
        }
    }
}
