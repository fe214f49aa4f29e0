//! 2-D convolution (groups = 1, NCHW, square kernel) as im2col + GEMM.
//!
//! With `K = C_in·k·k` and `P = OH·OW`, image `n` is
//! - forward: `Y_n [C_out, P] = W [C_out, K] · col(X_n) [K, P]` (+ bias per row);
//! - input gradient: `dX_n = col2im(Wᵀ · dY_n)` (col2im is im2col's adjoint, a scatter-sum);
//! - weight gradient: `dW += Σ_n dY_n · col(X_n)ᵀ`, bias gradient `db += Σ_n Σ_p dY_n`.
//!
//! Images with a small output plane share one GEMM: [`ConvGeom::group`] images have their
//! im2col matrices (and gradients) placed side by side, so each GEMM sees at least
//! [`GEMM_COLS`] columns and the weight is packed once per group instead of once per image
//! (ResNet-19's 8×8 layer has `P = 64`). A 1×1 stride-1 unpadded conv with one image per
//! group needs no im2col: `col(X_n)` is `X_n` itself.
//!
//! Parallelism: forward and input gradient run one single-threaded GEMM per image group on the
//! rayon pool; groups are fixed by the shape, so the result does not depend on the thread
//! count. The weight gradient is a reduction over images; it is split into a grid of tasks
//! fixed by the shape alone — blocks of input channels (disjoint columns of `dW`, no reduction
//! needed) times ranges of images (partial sums added in range order) — so it is deterministic
//! and thread-count independent too.
//!
//! Why im2col + `matrixmultiply` (measured with `perf record`, 1 thread, ResNet-19 layer-1
//! shape 16×128×32×32, 3×3): forward time is 62 % GEMM micro-kernel, 21 % GEMM packing,
//! 9 % im2col copies, 4 % im2col zero fills; input gradient 75 % micro-kernel, 8 % packing,
//! 9.5 % col2im, 2 % fills. So im2col/col2im cost ~10–13 % here; an implicit GEMM that packs
//! straight from the input (own packing + micro-kernel) could save that plus part of the
//! packing, and is the next step if convs dominate a profile. Alternatives measured and
//! rejected: computing `dX` as a forward conv with flipped weights, which trades col2im for an
//! im2col but turns the GEMM into the forward's shape (`C × 9C × P` ran at 104 GFLOP/s
//! against 149 for `Wᵀ·dY`'s `9C × C × P` at layer 1, 1 thread), and grouping up to 2048
//! columns (slower than 512 on the ResNet-19 shapes in our A/B runs). Grouping the 8×8
//! layer's images (`P = 64`, 8 per GEMM) sped its input gradient up ~25 % in an A/B run.
//! col2im writes `dX` (copying a "same" conv's centre tap, adding the others) instead of
//! zero-filling it and adding all taps: criterion `conv2d/dx` −10 to −17 % on the ResNet-19
//! shapes, −10 % on `mnist-cnn`'s conv2.
//!
//! The input and weight gradients of 3×3, stride-1, padding-1 convs with at least 32
//! channels on both sides run as Winograd F(2×2, 3×3) and F(3×3, 2×2) instead
//! ([`winograd`]): 16/36 of the GEMM work and no im2col or col2im. Input gradient −40 to −45 %
//! on the ResNet-19 shapes and −18 % on `mnist-cnn`'s conv2; weight gradient −43 to −51 %
//! and −25 % ([`backward_input_im2col`] and [`backward_weight_im2col`] stay the paths for
//! every other shape). Where the AVX-512 transforms apply, the input gradient runs as
//! F(4×4, 3×3) ([`winograd::f43`]) on planes at least 12 wide: 36/64 of F(2×2)'s GEMM work;
//! a further −34 % at ResNet-19's 32×32 layer, −27 % at 16×16, −8 % on `mnist-cnn`'s conv2
//! (its 8×8 layer stays on F(2×2)). With at most 64 output channels the Winograd input
//! gradient's products skip `matrixmultiply`'s packing ([`winograd`]'s `tile_gemm`: −19 to
//! −21 % on `mnist-cnn`'s conv2), and with AVX-512 the weight gradient's run as outer
//! products on transposed transforms (`winograd::outer`: −14 to −25 %). Where both
//! gradients of a conv on spikes run on F(4×4)-sized tiles ([`winograd::joint_applies`],
//! `mnist-cnn`'s conv2), [`backward_spikes_from`] runs them in one pass that reads `∂L/∂y`
//! once (−5 to −13 % for the two together).
//!
//! The dense forward of those convs runs as Winograd F(4×4, 3×3) too
//! ([`winograd::f43::forward`], the input gradient with the channel counts swapped) where
//! F(4×4) applies; other 3×3 "same" convs on planes 12–14 wide run [`direct`] (no im2col, no
//! packing; from spike bits too): −37 to −47 % against im2col at 14×14. On `mnist-cnn`'s
//! conv2 the three take 14.0 / 16.6 / 22.4 ms (Winograd / direct / im2col, 1 thread).

pub mod direct;
pub mod im2col;
mod output_grad;
pub mod sparse;
pub mod stem;
pub mod stem_forward;
pub mod stem_linear;
pub mod winograd;

use super::elementwise::{add_assign, sum};
use super::gemm::{sgemm, MatLayout};
use im2col::{col2im, gather, im2col, scatter};
pub use output_grad::OutputGrad;
use rayon::prelude::*;

/// Minimum columns per GEMM: images whose output plane is smaller are grouped (see the module
/// docs). Chosen from A/B runs with 256, 512, 1024 and 2048 on a noisy shared machine: 2048
/// was clearly slower, 256–1024 were within the noise; re-measure on a quiet one.
pub const GEMM_COLS: usize = 512;

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

    /// Images per GEMM. Grouping packs the weight (`C_out·K` floats) once per group instead
    /// of once per image but costs a gather/scatter of `C_out·P` floats per image, so images
    /// are grouped only when `K > P`, then `GEMM_COLS / P` of them (at most `n`). Depends on
    /// the shape only.
    pub fn group(&self) -> usize {
        if self.col_rows() <= self.out_plane() {
            return 1;
        }
        (GEMM_COLS / self.out_plane()).clamp(1, self.n.max(1))
    }

    /// Multiply-add FLOP of one forward pass (`2·N·C_out·K·P`); the input and weight
    /// gradients cost the same each.
    pub fn flops(&self) -> u64 {
        2 * (self.n * self.c_out * self.col_rows() * self.out_plane()) as u64
    }
}

/// Scratch for one task: an im2col buffer and a buffer for gathered/grouped GEMM operands.
#[derive(Debug, Default)]
struct Scratch {
    col: Vec<f32>,
    tmp: Vec<f32>,
}

thread_local! {
    /// One scratch set per thread, shared by every conv layer: it grows to the largest shape
    /// the thread has seen and is then reused, so memory is `threads × largest`, not
    /// `layers × tasks × largest`.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Runs `f` with this thread's scratch grown to at least `col` and `tmp` elements.
///
/// `f` must not re-enter the conv kernels on the same thread (it only runs im2col and
/// single-threaded GEMMs), otherwise the `RefCell` borrow panics.
fn with_scratch<R>(col: usize, tmp: usize, f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut s = cell.borrow_mut();
        if s.col.len() < col {
            s.col.resize(col, 0.0);
        }
        if s.tmp.len() < tmp {
            s.tmp.resize(tmp, 0.0);
        }
        f(&mut s)
    })
}

/// Reusable weight-gradient partial sums of one layer. Grows to the largest shape seen and is
/// then reused, so steady-state steps do not allocate. (im2col buffers are per thread, shared
/// across layers.)
#[derive(Debug, Default)]
pub struct ConvWorkspace {
    partials: Vec<f32>,
}

impl ConvWorkspace {
    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        4 * self.partials.len()
    }
}

/// Image groups per forward/input-gradient task: up to eight tasks per pool thread, so the
/// tail a thread leaves when it runs slower (a neighbour on its core, the other thread's
/// memory traffic) is at most an eighth of its share. With two tasks per thread ResNet-19's
/// input gradients kept the second core idle for 7–9 % of their time. Any split gives the
/// same result, and a task costs nothing beyond its groups (the scratch is per thread).
fn groups_per_task(groups: usize) -> usize {
    groups
        .div_ceil(TASKS_PER_THREAD * rayon::current_num_threads())
        .max(1)
}

/// Tasks per pool thread of the image-group loops ([`groups_per_task`]).
const TASKS_PER_THREAD: usize = 8;

fn check_lens(g: &ConvGeom, x: usize, w: usize, y: usize, what: &str) {
    assert!(
        x == g.n * g.in_img() && w == g.weight_len() && y == g.n * g.out_img(),
        "conv2d {what}: slice lengths do not match {g:?}"
    );
}

/// `y ← conv(x, weight) + bias`; `x` is `[N, C_in, H, W]`, `weight` `[C_out, C_in, k, k]`,
/// `y` `[N, C_out, OH, OW]` (overwritten, never read). 3×3 "same" convs run Winograd
/// F(4×4, 3×3) ([`winograd::f43::forward`]) where [`winograd::f43::preferred`] (at least 32
/// channels each way, 12–32 wide), a one-channel stem by [`stem_forward::forward`], else
/// [`direct::forward`] where it is [`direct::preferred`]; every other shape im2col + GEMM.
///
/// # Panics
/// If a slice length disagrees with `g`, or `bias` is not `C_out` long.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    if winograd::f43::preferred(g) {
        return winograd::f43::forward(g, x, weight, bias, y);
    }
    if stem_forward::preferred(g) {
        return stem_forward::forward(g, x, weight, bias, y);
    }
    if direct::preferred(g) {
        return direct::forward(g, direct::Input::Dense(x), weight, bias, y);
    }
    forward_im2col(g, x, weight, bias, y);
}

/// [`forward`] as im2col + GEMM, for any shape.
///
/// # Panics
/// As [`forward`].
pub fn forward_im2col(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    check_lens(g, x.len(), weight.len(), y.len(), "forward");
    assert!(
        bias.is_none_or(|b| b.len() == g.c_out),
        "conv2d forward: bias length"
    );
    if g.n == 0 {
        return;
    }
    let (gs, plane, kr) = (g.group(), g.out_plane(), g.col_rows());
    let per = groups_per_task(g.n.div_ceil(gs)) * gs;
    let direct = gs == 1 && g.is_pointwise();
    let col_len = if direct { 0 } else { kr * gs * plane };
    let tmp_len = if gs == 1 { 0 } else { g.c_out * gs * plane };
    let lw = MatLayout::row_major(g.c_out, kr);
    y.par_chunks_mut(per * g.out_img())
        .zip(x.par_chunks(per * g.in_img()))
        .for_each(|(yc, xc)| {
            with_scratch(col_len, tmp_len, |s| {
                for (yg, xg) in yc
                    .chunks_mut(gs * g.out_img())
                    .zip(xc.chunks(gs * g.in_img()))
                {
                    let cnt = yg.len() / g.out_img();
                    let ncols = cnt * plane;
                    let src: &[f32] = if direct {
                        xg
                    } else {
                        for j in 0..cnt {
                            let xi = &xg[j * g.in_img()..];
                            im2col(g, xi, 0, g.c_in, &mut s.col[j * plane..], ncols);
                        }
                        &s.col
                    };
                    let dst: &mut [f32] = if cnt == 1 { yg } else { &mut s.tmp };
                    let beta = match bias {
                        Some(b) => {
                            for (row, &bo) in dst.chunks_exact_mut(ncols).zip(b) {
                                row.fill(bo);
                            }
                            1.0
                        }
                        None => 0.0,
                    };
                    let lsrc = MatLayout::row_major(kr, ncols);
                    let ldst = MatLayout::row_major(g.c_out, ncols);
                    sgemm(1.0, weight, lw, src, lsrc, beta, dst, ldst);
                    if cnt > 1 {
                        scatter(&s.tmp, g.c_out, plane, cnt, yg);
                    }
                }
            })
        });
}

/// `dx ← ∂L/∂x` from `dy = ∂L/∂y` (`dx` is overwritten, never read).
///
/// # Panics
/// If a slice length disagrees with `g`.
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    check_lens(g, dx.len(), weight.len(), dy.len(), "backward_input");
    if g.n == 0 {
        return;
    }
    if winograd::preferred(g) {
        return winograd::backward_input(g, dy, weight, dx);
    }
    backward_input_im2col(g, dy, weight, dx);
}

/// [`backward_input`] from `dy` given as an [`OutputGrad`]: the Winograd kernels form a
/// [`OutputGrad::ThroughBn`] plane by plane as they load it; other shapes get it formed into a
/// buffer first. The same bits as [`backward_input`] on the formed `∂L/∂y`.
///
/// # Panics
/// If a slice length disagrees with `g`, or `dy`'s parts disagree.
pub fn backward_input_from(g: &ConvGeom, dy: OutputGrad, weight: &[f32], dx: &mut [f32]) {
    let dense = match dy {
        OutputGrad::Dense(dy) => return backward_input(g, dy, weight, dx),
        _ if winograd::preferred(g) => {
            check_lens(g, dx.len(), weight.len(), dy.len(), "backward_input");
            assert!(dy.is_consistent(g.c_out), "conv2d backward_input: {dy:?}");
            return winograd::backward_input_from(g, dy, weight, dx);
        }
        _ => dy.to_dense(g),
    };
    backward_input(g, &dense, weight, dx);
    crate::buffer_pool::give_back(dense);
}

/// [`backward_input`] as `Wᵀ·dY` GEMMs and col2im, for any shape.
///
/// # Panics
/// If a slice length disagrees with `g`.
pub fn backward_input_im2col(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    check_lens(g, dx.len(), weight.len(), dy.len(), "backward_input");
    if g.n == 0 {
        return;
    }
    let (gs, plane, kr) = (g.group(), g.out_plane(), g.col_rows());
    let per = groups_per_task(g.n.div_ceil(gs)) * gs;
    let direct = gs == 1 && g.is_pointwise();
    let col_len = if direct { 0 } else { kr * gs * plane };
    let tmp_len = if gs == 1 { 0 } else { g.c_out * gs * plane };
    let lwt = MatLayout::row_major(g.c_out, kr).t();
    dx.par_chunks_mut(per * g.in_img())
        .zip(dy.par_chunks(per * g.out_img()))
        .for_each(|(dxc, dyc)| {
            with_scratch(col_len, tmp_len, |s| {
                for (dxg, dyg) in dxc
                    .chunks_mut(gs * g.in_img())
                    .zip(dyc.chunks(gs * g.out_img()))
                {
                    let cnt = dyg.len() / g.out_img();
                    let ncols = cnt * plane;
                    let grad: &[f32] = if cnt == 1 {
                        dyg
                    } else {
                        gather(dyg, g.c_out, plane, cnt, &mut s.tmp);
                        &s.tmp
                    };
                    let lgrad = MatLayout::row_major(g.c_out, ncols);
                    if direct {
                        sgemm(
                            1.0,
                            weight,
                            lwt,
                            grad,
                            lgrad,
                            0.0,
                            dxg,
                            MatLayout::row_major(kr, plane),
                        );
                        continue;
                    }
                    let lcol = MatLayout::row_major(kr, ncols);
                    sgemm(1.0, weight, lwt, grad, lgrad, 0.0, &mut s.col, lcol);
                    for j in 0..cnt {
                        let dxi = &mut dxg[j * g.in_img()..(j + 1) * g.in_img()];
                        col2im(g, &mut s.col[j * plane..], ncols, dxi);
                    }
                }
            })
        });
}

/// Target number of weight-gradient tasks (channel blocks × image ranges). A constant, not the
/// thread count, so the summation order — and the result — never depends on the pool size.
const WGRAD_TASKS: usize = 8;
/// Target columns of `dW` per channel block (`matrixmultiply`'s `KC` = 256 as a unit).
const WGRAD_COLS: usize = 256;

/// The weight-gradient task grid for `g` (`n ≥ 1`): `(channels per block, blocks, images per
/// range, ranges)`, every block and range non-empty, ranges a multiple of [`ConvGeom::group`].
fn wgrad_grid(g: &ConvGeom) -> (usize, usize, usize, usize) {
    let want_blocks = (g.col_rows() / WGRAD_COLS).clamp(1, g.c_in);
    let cb = g.c_in.div_ceil(want_blocks);
    let blocks = g.c_in.div_ceil(cb);
    let gs = g.group();
    let per = g.n.div_ceil(WGRAD_TASKS.div_ceil(blocks)).div_ceil(gs) * gs;
    (cb, blocks, per, g.n.div_ceil(per))
}

/// `dw += ∂L/∂W` from the input `x` and `dy = ∂L/∂y`: [`stem::backward_weight`] for 3×3
/// "same" convs on a few input channels, Winograd where [`winograd::preferred_for_weight`],
/// else [`backward_weight_im2col`].
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
    if stem::preferred(g) {
        return stem::backward_weight(g, x, dy, dw);
    }
    if winograd::preferred_for_weight(g) {
        return winograd::backward_weight(g, x, dy, dw, ws);
    }
    backward_weight_im2col(g, x, dy, dw, ws);
}

/// True if [`backward_weight_spikes`] reads `g`'s spike input as bits
/// ([`winograd::weight::reads_spikes`]); otherwise the caller unpacks them for
/// [`backward_weight`].
pub fn weight_grad_reads_spikes(g: &ConvGeom) -> bool {
    winograd::preferred_for_weight(g) && winograd::weight::reads_spikes(g)
}

/// [`backward_weight`] of the spike input `x` given as bits, where
/// [`weight_grad_reads_spikes`]: the same bits as on the unpacked input, without the f32 copy.
///
/// # Panics
/// If [`weight_grad_reads_spikes`] is false for `g`, or a length disagrees with `g`.
pub fn backward_weight_spikes(
    g: &ConvGeom,
    x: &sparse::SpikeBits,
    dy: &[f32],
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    assert!(
        weight_grad_reads_spikes(g),
        "conv2d backward_weight_spikes: not taken for {g:?}"
    );
    winograd::weight::backward_weight_spikes(g, x, dy, dw, ws);
}

/// [`backward_weight_spikes`] from `dy` given as an [`OutputGrad`] (formed image by image if
/// it comes through a batch norm): the same bits as [`backward_weight_spikes`] on the formed
/// `∂L/∂y`.
///
/// # Panics
/// As [`backward_weight_spikes`], or if `dy`'s parts disagree.
pub fn backward_weight_spikes_from(
    g: &ConvGeom,
    x: &sparse::SpikeBits,
    dy: OutputGrad,
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    assert!(
        weight_grad_reads_spikes(g),
        "conv2d backward_weight_spikes: not taken for {g:?}"
    );
    winograd::weight::backward_weight_spikes_from(g, x, dy, dw, ws);
}

/// Both gradients of a conv on the spikes `x` (given as bits, where
/// [`weight_grad_reads_spikes`]) from `dy` given as an [`OutputGrad`]: `dw += ∂L/∂W` as
/// [`backward_weight_spikes_from`] and `dx ← ∂L/∂x` as [`backward_input_from`], the same bits.
/// Where [`winograd::joint_applies`] in one pass that reads `∂L/∂y` from memory once
/// ([`winograd::backward_joint`]), else one after the other.
///
/// # Panics
/// As the two kernels.
pub fn backward_spikes_from(
    g: &ConvGeom,
    x: &sparse::SpikeBits,
    dy: OutputGrad,
    weight: &[f32],
    dw: &mut [f32],
    dx: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    if weight_grad_reads_spikes(g) && winograd::joint_applies(g) {
        check_lens(g, dx.len(), weight.len(), dy.len(), "backward_spikes");
        assert!(dy.is_consistent(g.c_out), "conv2d backward_spikes: {dy:?}");
        let x = direct::Input::Spikes(x);
        return winograd::backward_joint(g, x, dy, weight, dw, dx, ws);
    }
    backward_weight_spikes_from(g, x, dy, dw, ws);
    backward_input_from(g, dy, weight, dx);
}

/// [`backward_weight`] as `dY·colᵀ` GEMMs over a fixed grid of channel blocks and image
/// ranges, for any shape.
///
/// # Panics
/// If a slice length disagrees with `g`.
pub fn backward_weight_im2col(
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
    let (cb, blocks, per, ranges) = wgrad_grid(g);
    let (gs, plane, kk) = (g.group(), g.out_plane(), g.k * g.k);
    let slot = g.c_out * cb * kk;
    let tasks = blocks * ranges;
    if ws.partials.len() < tasks * slot {
        ws.partials.resize(tasks * slot, 0.0);
    }
    let direct = gs == 1 && g.is_pointwise();
    let col_len = if direct { 0 } else { cb * kk * gs * plane };
    let tmp_len = if gs == 1 { 0 } else { g.c_out * gs * plane };
    let ldy = |cols: usize| MatLayout::row_major(g.c_out, cols);
    ws.partials[..tasks * slot]
        .par_chunks_mut(slot)
        .enumerate()
        .for_each(|(t, part)| {
            with_scratch(col_len, tmp_len, |s| {
                let (b, range) = (t / ranges, t % ranges);
                let c0 = b * cb;
                let c1 = (c0 + cb).min(g.c_in);
                let nb = (c1 - c0) * kk;
                let lpart = MatLayout::row_major(g.c_out, nb);
                let (n0, n1) = (range * per, ((range + 1) * per).min(g.n));
                for i0 in (n0..n1).step_by(gs) {
                    let cnt = gs.min(n1 - i0);
                    let ncols = cnt * plane;
                    let dyg = &dy[i0 * g.out_img()..(i0 + cnt) * g.out_img()];
                    let xg = &x[i0 * g.in_img()..(i0 + cnt) * g.in_img()];
                    let grad: &[f32] = if cnt == 1 {
                        dyg
                    } else {
                        gather(dyg, g.c_out, plane, cnt, &mut s.tmp);
                        &s.tmp
                    };
                    let src: &[f32] = if direct {
                        &xg[c0 * plane..]
                    } else {
                        for j in 0..cnt {
                            let xi = &xg[j * g.in_img()..];
                            im2col(g, xi, c0, c1, &mut s.col[j * plane..], ncols);
                        }
                        &s.col
                    };
                    let lsrc = MatLayout::row_major(nb, ncols).t();
                    let beta = if i0 == n0 { 0.0 } else { 1.0 };
                    sgemm(1.0, grad, ldy(ncols), src, lsrc, beta, part, lpart);
                }
            })
        });
    let partials = &ws.partials;
    dw.par_chunks_mut(g.col_rows())
        .enumerate()
        .for_each(|(o, dw_row)| {
            for b in 0..blocks {
                let c0 = b * cb;
                let nb = ((c0 + cb).min(g.c_in) - c0) * kk;
                let dst = &mut dw_row[c0 * kk..c0 * kk + nb];
                for range in 0..ranges {
                    let part = &partials[(b * ranges + range) * slot..];
                    add_assign(dst, &part[o * nb..(o + 1) * nb]);
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
