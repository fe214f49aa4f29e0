//! 2-D convolution (groups = 1, NCHW, square kernel) as im2col + GEMM, one GEMM per image.
//!
//! With `K = C_in·k·k` and `P = OH·OW`, image `n` is
//! - forward: `Y_n [C_out, P] = W [C_out, K] · col(X_n) [K, P]` (+ bias per row);
//! - input gradient: `dX_n = col2im(Wᵀ · dY_n)` (col2im is im2col's adjoint, a scatter-add);
//! - weight gradient: `dW += Σ_n dY_n · col(X_n)ᵀ`, bias gradient `db += Σ_n Σ_p dY_n`.
//!
//! A 1×1 stride-1 unpadded conv needs no im2col: `col(X_n)` is `X_n` itself.
//!
//! Parallelism: forward and input gradient run one single-threaded GEMM per image on the rayon
//! pool (images are independent, so the result does not depend on the thread count). The
//! weight gradient is a reduction over images; it is split into a grid of tasks fixed by the
//! shape alone — blocks of input channels (disjoint columns of `dW`, no reduction needed) times
//! groups of images (partial sums added in group order) — so it is deterministic and
//! thread-count independent too.
//!
//! Why im2col: it turns every conv into large GEMMs that `matrixmultiply` runs at 70–80 % of
//! peak, and the im2col/col2im passes are memory-bound copies of `K·P` floats per image against
//! `2·C_out·K·P` FLOP, i.e. a few percent of the time for `C_out ≥ 64`
//! (measured in `benches/kernels.rs`; see the report in the commit history).

use super::elementwise::{add_assign, sum};
use super::gemm::{sgemm, MatLayout};
use rayon::prelude::*;

/// The geometry of one conv call (all sizes in elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Images (`T·B`).
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Output height `(h + 2·pad − k) / stride + 1`.
    pub oh: usize,
    /// Output width `(w + 2·pad − k) / stride + 1`.
    pub ow: usize,
}

impl ConvGeom {
    /// The geometry, or `None` if a size other than `n` is 0 or the kernel does not fit in the
    /// padded input.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        if [h, w, k, stride, c_in, c_out].contains(&0) || h + 2 * pad < k || w + 2 * pad < k {
            return None;
        }
        Some(ConvGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        })
    }

    /// `C_in·k·k`: rows of the im2col matrix, columns of the weight matrix.
    pub fn col_rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// `OH·OW`: output positions per image.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input image.
    pub fn in_img(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Elements of one output image.
    pub fn out_img(&self) -> usize {
        self.c_out * self.out_plane()
    }

    /// Elements of the weight `[C_out, C_in, k, k]`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.col_rows()
    }

    /// True for 1×1, stride 1, no padding: the input is its own im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Multiply-add FLOP of one forward pass (`2·N·C_out·K·P`); the input and weight
    /// gradients cost the same each.
    pub fn flops(&self) -> u64 {
        2 * (self.n * self.c_out * self.col_rows() * self.out_plane()) as u64
    }
}

/// Reusable scratch for the conv kernels (im2col buffers, weight-gradient partials). Grows to
/// the largest shape seen and is then reused, so steady-state steps do not allocate.
#[derive(Debug, Default)]
pub struct ConvWorkspace {
    cols: Vec<Vec<f32>>,
    partials: Vec<f32>,
}

/// Grows `bufs` to at least `count` buffers of at least `len` elements; returns the first
/// `count`.
fn scratch(bufs: &mut Vec<Vec<f32>>, count: usize, len: usize) -> &mut [Vec<f32>] {
    if bufs.len() < count {
        bufs.resize_with(count, Vec::new);
    }
    for c in &mut bufs[..count] {
        if c.len() < len {
            c.resize(len, 0.0);
        }
    }
    &mut bufs[..count]
}

impl ConvWorkspace {
    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        4 * (self.cols.iter().map(Vec::len).sum::<usize>() + self.partials.len())
    }
}

/// Output positions `o` in `0..len_out` whose input index `o·s + kpos − p` lies in
/// `0..len_in`, as a half-open range.
fn valid_range(kpos: usize, s: usize, p: usize, len_in: usize, len_out: usize) -> (usize, usize) {
    let lo = if p > kpos { (p - kpos).div_ceil(s) } else { 0 };
    let hi = if len_in + p > kpos {
        ((len_in + p - kpos - 1) / s + 1).min(len_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Writes rows `(c, kh, kw)` for `c` in `c0..c1` of image `x_img`'s im2col matrix into
/// `col` (`(c1 − c0)·k·k × P`, row-major): element `((c − c0)·k² + kh·k + kw, oy·OW + ox)` is
/// `x_img[c, oy·s + kh − p, ox·s + kw − p]`, or 0 in the padding. Every element of
/// `col[..rows·P]` is written, none is read.
///
/// # Panics
/// If `x_img` is shorter than one image or `col` than the rows asked for, or `c1 > C_in`.
pub fn im2col(g: &ConvGeom, x_img: &[f32], c0: usize, c1: usize, col: &mut [f32]) {
    let (k, s, p, w, ow) = (g.k, g.stride, g.pad, g.w, g.ow);
    let plane = g.out_plane();
    let mut rows = col[..(c1 - c0) * k * k * plane].chunks_exact_mut(plane);
    let same = s == 1 && ow == w && p < w;
    for c in c0..c1 {
        let xc = &x_img[c * g.h * w..(c + 1) * g.h * w];
        for kh in 0..k {
            let (oy0, oy1) = valid_range(kh, s, p, g.h, g.oh);
            for kw in 0..k {
                let row = rows.next().expect("col has (c1 - c0)·k·k rows");
                let (ox0, ox1) = valid_range(kw, s, p, w, ow);
                if same && oy0 < oy1 {
                    // "Same" stride-1 conv: the row is the whole plane shifted by
                    // d = (kh − p)·W + (kw − p), so one long copy replaces OH short ones;
                    // the columns that wrapped around a row edge are zeroed after it.
                    let d = (kh * w + kw) as isize - (p * w + p) as isize;
                    let (lo, hi) = ((oy0 * w) as isize, (oy1 * w) as isize);
                    // p < W keeps both ends inside the plane: lo + d ≤ (H−1)·W + p < H·W and
                    // hi + d ≥ W − p > 0.
                    let s_lo = (lo + d).max(0);
                    let s_hi = (hi + d).min((g.h * w) as isize);
                    let (d_lo, d_hi) = ((s_lo - d) as usize, (s_hi - d) as usize);
                    row[..d_lo].fill(0.0);
                    row[d_lo..d_hi].copy_from_slice(&xc[s_lo as usize..s_hi as usize]);
                    row[d_hi..].fill(0.0);
                    if ox0 > 0 || ox1 < w {
                        for r in row[oy0 * w..oy1 * w].chunks_exact_mut(w) {
                            r[..ox0].fill(0.0);
                            r[ox1..].fill(0.0);
                        }
                    }
                    continue;
                }
                row[..oy0 * ow].fill(0.0);
                row[oy1 * ow..].fill(0.0);
                for oy in oy0..oy1 {
                    let src = &xc[(oy * s + kh - p) * w..][..w];
                    let out = &mut row[oy * ow..(oy + 1) * ow];
                    out[..ox0].fill(0.0);
                    out[ox1..].fill(0.0);
                    let ix0 = ox0 * s + kw - p;
                    if s == 1 {
                        out[ox0..ox1].copy_from_slice(&src[ix0..ix0 + (ox1 - ox0)]);
                    } else {
                        for (o, v) in out[ox0..ox1].iter_mut().zip(src[ix0..].iter().step_by(s)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the im2col matrix `col` (`K × P`) of one image back into `dx_img` (im2col's
/// adjoint: `⟨col2im(c), x⟩ = ⟨c, im2col(x)⟩`).
///
/// `col` is scratch: entries that fall in the zero padding may be overwritten with 0 (the fast
/// path for "same" stride-1 convs zeroes them so a whole shifted row can be added at once).
///
/// # Panics
/// If `col` is shorter than `K·P` or `dx_img` than one image.
pub fn col2im_add(g: &ConvGeom, col: &mut [f32], dx_img: &mut [f32]) {
    let (k, s, p, w, ow) = (g.k, g.stride, g.pad, g.w, g.ow);
    let plane = g.out_plane();
    let same = s == 1 && ow == w && p < w;
    let mut rows = col[..g.col_rows() * plane].chunks_exact_mut(plane);
    for c in 0..g.c_in {
        let dxc = &mut dx_img[c * g.h * w..(c + 1) * g.h * w];
        for kh in 0..k {
            let (oy0, oy1) = valid_range(kh, s, p, g.h, g.oh);
            for kw in 0..k {
                let row = rows.next().expect("col has K rows");
                let (ox0, ox1) = valid_range(kw, s, p, w, ow);
                if ox0 == ox1 || oy0 == oy1 {
                    continue;
                }
                if same {
                    // Mirror of im2col's shifted copy: zero the entries that belong to padding
                    // columns (they would wrap into the neighbouring row), then add the
                    // valid rows as one shifted block. Adding 0.0 leaves dx unchanged.
                    if ox0 > 0 || ox1 < w {
                        for r in row[oy0 * w..oy1 * w].chunks_exact_mut(w) {
                            r[..ox0].fill(0.0);
                            r[ox1..].fill(0.0);
                        }
                    }
                    let d = (kh * w + kw) as isize - (p * w + p) as isize;
                    let (lo, hi) = ((oy0 * w) as isize, (oy1 * w) as isize);
                    let s_lo = (lo + d).max(0);
                    let s_hi = (hi + d).min((g.h * w) as isize);
                    let (d_lo, d_hi) = ((s_lo - d) as usize, (s_hi - d) as usize);
                    add_assign(&mut dxc[s_lo as usize..s_hi as usize], &row[d_lo..d_hi]);
                    continue;
                }
                let ix0 = ox0 * s + kw - p;
                for oy in oy0..oy1 {
                    let dst = &mut dxc[(oy * s + kh - p) * w..][..w];
                    let src = &row[oy * ow + ox0..oy * ow + ox1];
                    if s == 1 {
                        add_assign(&mut dst[ix0..ix0 + src.len()], src);
                    } else {
                        for (d, v) in dst[ix0..].iter_mut().step_by(s).zip(src) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    }
}

/// How many images each forward/input-gradient task takes: two tasks per pool thread so a
/// core slowed by a neighbour does not stall the step. Any split gives the same result.
fn images_per_task(n: usize) -> usize {
    n.div_ceil(2 * rayon::current_num_threads()).max(1)
}

fn check_lens(g: &ConvGeom, x: usize, w: usize, y: usize, what: &str) {
    assert!(
        x == g.n * g.in_img() && w == g.weight_len() && y == g.n * g.out_img(),
        "conv2d {what}: slice lengths do not match {g:?}"
    );
}

/// `y ← conv(x, weight) + bias`; `x` is `[N, C_in, H, W]`, `weight` `[C_out, C_in, k, k]`,
/// `y` `[N, C_out, OH, OW]` (overwritten, never read).
///
/// # Panics
/// If a slice length disagrees with `g`, or `bias` is not `C_out` long.
pub fn forward(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    check_lens(g, x.len(), weight.len(), y.len(), "forward");
    assert!(
        bias.is_none_or(|b| b.len() == g.c_out),
        "conv2d forward: bias length"
    );
    if g.n == 0 {
        return;
    }
    let per = images_per_task(g.n);
    let col_len = if g.is_pointwise() {
        0
    } else {
        g.col_rows() * g.out_plane()
    };
    let cols = scratch(&mut ws.cols, g.n.div_ceil(per), col_len);
    let plane = g.out_plane();
    let lw = MatLayout::row_major(g.c_out, g.col_rows());
    let lcol = MatLayout::row_major(g.col_rows(), plane);
    let ly = MatLayout::row_major(g.c_out, plane);
    y.par_chunks_mut(per * g.out_img())
        .zip(x.par_chunks(per * g.in_img()))
        .zip(cols.par_iter_mut())
        .for_each(|((yc, xc), col)| {
            for (yi, xi) in yc
                .chunks_exact_mut(g.out_img())
                .zip(xc.chunks_exact(g.in_img()))
            {
                let beta = match bias {
                    Some(b) => {
                        for (row, &bo) in yi.chunks_exact_mut(plane).zip(b) {
                            row.fill(bo);
                        }
                        1.0
                    }
                    None => 0.0,
                };
                let src: &[f32] = if g.is_pointwise() {
                    xi
                } else {
                    im2col(g, xi, 0, g.c_in, col);
                    &col[..]
                };
                sgemm(1.0, weight, lw, src, lcol, beta, yi, ly);
            }
        });
}

/// `dx ← ∂L/∂x` from `dy = ∂L/∂y` (`dx` is overwritten, never read).
///
/// # Panics
/// If a slice length disagrees with `g`.
pub fn backward_input(
    g: &ConvGeom,
    dy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    check_lens(g, dx.len(), weight.len(), dy.len(), "backward_input");
    if g.n == 0 {
        return;
    }
    let per = images_per_task(g.n);
    let plane = g.out_plane();
    let col_len = if g.is_pointwise() {
        0
    } else {
        g.col_rows() * plane
    };
    let cols = scratch(&mut ws.cols, g.n.div_ceil(per), col_len);
    let lwt = MatLayout::row_major(g.c_out, g.col_rows()).t();
    let ldy = MatLayout::row_major(g.c_out, plane);
    let lcol = MatLayout::row_major(g.col_rows(), plane);
    dx.par_chunks_mut(per * g.in_img())
        .zip(dy.par_chunks(per * g.out_img()))
        .zip(cols.par_iter_mut())
        .for_each(|((dxc, dyc), col)| {
            for (dxi, dyi) in dxc
                .chunks_exact_mut(g.in_img())
                .zip(dyc.chunks_exact(g.out_img()))
            {
                if g.is_pointwise() {
                    sgemm(1.0, weight, lwt, dyi, ldy, 0.0, dxi, lcol);
                } else {
                    sgemm(1.0, weight, lwt, dyi, ldy, 0.0, col, lcol);
                    dxi.fill(0.0);
                    col2im_add(g, col, dxi);
                }
            }
        });
}

/// Target number of weight-gradient tasks (channel blocks × image groups). A constant, not the
/// thread count, so the summation order — and the result — never depends on the pool size.
const WGRAD_TASKS: usize = 8;
/// Target columns of `dW` per channel block (`matrixmultiply`'s `KC` = 256 as a unit).
const WGRAD_COLS: usize = 256;

/// The weight-gradient task grid for `g` (`n ≥ 1`): `(channels per block, blocks, images per
/// group, groups)`, every block and group non-empty.
fn wgrad_grid(g: &ConvGeom) -> (usize, usize, usize, usize) {
    let want_blocks = (g.col_rows() / WGRAD_COLS).clamp(1, g.c_in);
    let cb = g.c_in.div_ceil(want_blocks);
    let blocks = g.c_in.div_ceil(cb);
    let per_group = g.n.div_ceil(WGRAD_TASKS.div_ceil(blocks));
    (cb, blocks, per_group, g.n.div_ceil(per_group))
}

/// `dw += ∂L/∂W` from the input `x` and `dy = ∂L/∂y`.
///
/// Deterministic for any thread count: see the module docs.
///
/// # Panics
/// If a slice length disagrees with `g`.
pub fn backward_weight(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    check_lens(g, x.len(), dw.len(), dy.len(), "backward_weight");
    if g.n == 0 {
        return;
    }
    let (cb, blocks, imgs_per_group, groups) = wgrad_grid(g);
    let kk = g.k * g.k;
    let plane = g.out_plane();
    let slot = g.c_out * cb * kk;
    let tasks = blocks * groups;
    if ws.partials.len() < tasks * slot {
        ws.partials.resize(tasks * slot, 0.0);
    }
    let col_len = if g.is_pointwise() { 0 } else { cb * kk * plane };
    let cols = scratch(&mut ws.cols, tasks, col_len);
    let ldy = MatLayout::row_major(g.c_out, plane);
    ws.partials[..tasks * slot]
        .par_chunks_mut(slot)
        .zip(cols.par_iter_mut())
        .enumerate()
        .for_each(|(t, (part, col))| {
            let (b, grp) = (t / groups, t % groups);
            let c0 = b * cb;
            let c1 = (c0 + cb).min(g.c_in);
            let ncols = (c1 - c0) * kk;
            let lpart = MatLayout::row_major(g.c_out, ncols);
            let n0 = grp * imgs_per_group;
            let n1 = (n0 + imgs_per_group).min(g.n);
            for i in n0..n1 {
                let xi = &x[i * g.in_img()..(i + 1) * g.in_img()];
                let dyi = &dy[i * g.out_img()..(i + 1) * g.out_img()];
                let (src, lsrc): (&[f32], MatLayout) = if g.is_pointwise() {
                    (&xi[c0 * plane..], MatLayout::row_major(ncols, plane).t())
                } else {
                    im2col(g, xi, c0, c1, col);
                    (&col[..], MatLayout::row_major(ncols, plane).t())
                };
                let beta = if i == n0 { 0.0 } else { 1.0 };
                sgemm(1.0, dyi, ldy, src, lsrc, beta, part, lpart);
            }
        });
    let partials = &ws.partials;
    dw.par_chunks_mut(g.col_rows())
        .enumerate()
        .for_each(|(o, dw_row)| {
            for b in 0..blocks {
                let c0 = b * cb;
                let ncols = ((c0 + cb).min(g.c_in) - c0) * kk;
                let dst = &mut dw_row[c0 * kk..c0 * kk + ncols];
                for grp in 0..groups {
                    let part = &partials[(b * groups + grp) * slot..];
                    add_assign(dst, &part[o * ncols..(o + 1) * ncols]);
                }
            }
        });
}

/// `db[o] += Σ_n Σ_p dy[n, o, p]` (f32 lanes within a row, f64 across rows, fixed order).
///
/// # Panics
/// If `dy` is not `N·C_out·P` long or `db` not `C_out`.
pub fn backward_bias(g: &ConvGeom, dy: &[f32], db: &mut [f32]) {
    assert!(
        dy.len() == g.n * g.out_img() && db.len() == g.c_out,
        "conv2d backward_bias: lengths"
    );
    let plane = g.out_plane();
    db.par_iter_mut().enumerate().for_each(|(o, d)| {
        let mut acc = 0.0f64;
        for i in 0..g.n {
            acc += sum(&dy[i * g.out_img() + o * plane..][..plane]) as f64;
        }
        *d += acc as f32;
    });
}

#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;
