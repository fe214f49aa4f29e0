//! The weight gradient of a 3×3, stride-1, padding-1 conv by Winograd's F(3×3, 4×4), on the
//! outer-product path ([`super::outer`]) where its partial `D` stays in L2.
//!
//! Per 4×4 tile of `dY`, `dW[o][c]` gains the 3×3 correlation of the 6×6 input window
//! (from `4ty − 1`, `4tx − 1`) with the tile: with F(4×4, 3×3)'s matrices ([`super::f43`]),
//! `Gᵀ·[(A·dy·Aᵀ) ⊙ (Bᵀ·x·B)]·G` (the transposition of its forward algorithm: the gradient
//! tile plays the kernel, `dW` the output). Summed over tiles, the products are 36 GEMMs
//! `D_ξ += U_ξ·V_ξᵀ`, each over a quarter of F(3×3, 2×2)'s tiles ([`super::weight`]): on a
//! 14×14 plane 16 tiles × 36 = 576 products per channel pair instead of 49 × 16 = 784, and as
//! many fewer transformed values written and read.
//!
//! Numerics: `A` has coefficients up to 8 and `Gᵀ` down to 1/24, so the rounding is F(4×4)'s
//! (the conv tests bound it against the direct correlation in f64). Deterministic for any
//! thread count: as [`super::weight`], fixed image ranges summed in order.

use super::super::direct::Input;
use super::super::{with_scratch, ConvGeom, ConvWorkspace, OutputGrad};
use super::outer::{self, Image, Transform};
use super::{f43, fits, weight, Transforms, XI_PAD};
use rayon::prelude::*;

/// Image ranges (tasks): a constant, so the summation order does not depend on the threads.
const TASKS: usize = 8;
/// Products per tile.
const XIS: usize = 36;
/// Bytes of a partial `D` (`36·C_out·C_in` floats) up to which this path is taken: it stays in
/// L2 beside a group's transforms.
const MAX_PARTIAL_BYTES: usize = 512 * 1024;
/// Bytes of one group's transformed tiles (`Vᵀ` and `Uᵀ`) the groups aim for.
const GROUP_BYTES: usize = 640 * 1024;

/// True if [`backward_weight`] takes `g` on this CPU: a conv that [`fits`], at least
/// [`f43::MIN_WIDTH`] wide (narrower planes waste most of a 4×4 tile), AVX-512 with channel
/// counts the outer-product blocks take, and a partial `D` of at most [`MAX_PARTIAL_BYTES`].
pub(super) fn applies(g: &ConvGeom) -> bool {
    fits(g)
        && g.w >= f43::MIN_WIDTH
        && XIS * g.c_in * g.c_out * 4 <= MAX_PARTIAL_BYTES
        && Transforms::detect(g) == Transforms::Avx512
        && outer::applies(g.c_in, g.c_out)
}

/// `Gᵀ·x`: three values from six products (one row or column of `D`).
fn gt(x: [f32; 6]) -> [f32; 3] {
    let [x0, x1, x2, x3, x4, x5] = x;
    let (p, q) = (x1 + x2, x3 + x4);
    [
        x0 / 4.0 - p / 6.0 + q / 24.0,
        (x2 - x1) / 6.0 + (x3 - x4) / 12.0,
        (q - p) / 6.0 + x5,
    ]
}

/// `k[a·3 + b] += (Gᵀ·d·G)[a][b]` for the 6×6 `d[6i + j]`.
fn add_output(d: &[f32; XIS], k: &mut [f32]) {
    // (d·G)[i][b]: each row of `d` through Gᵀ.
    let rows: [[f32; 3]; 6] = std::array::from_fn(|i| gt(std::array::from_fn(|j| d[6 * i + j])));
    for b in 0..3 {
        let column = gt(std::array::from_fn(|i| rows[i][b]));
        for (a, v) in column.into_iter().enumerate() {
            k[3 * a + b] += v;
        }
    }
}

/// `dw += ∂L/∂W` from the input `x` (floats or spike bits) and `dy = ∂L/∂y`.
///
/// # Panics
/// If [`applies`] is false for `g`, or a length disagrees with `g`.
pub(super) fn backward_weight(
    g: &ConvGeom,
    x: Input,
    dy: OutputGrad,
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    check(g, x, dy, dw);
    if g.n == 0 {
        return;
    }
    let plan = Plan::new(g);
    let (col_len, tmp_len) = plan.scratch();
    ws.partials
        .resize(ws.partials.len().max(plan.tasks * plan.slot), 0.0);
    ws.partials[..plan.tasks * plan.slot]
        .par_chunks_mut(plan.slot)
        .enumerate()
        .for_each(|(t, part)| {
            with_scratch(col_len, tmp_len, |s| {
                let (n0, n1) = plan.task_images(g, t);
                part.fill(0.0);
                let mut scratch = GroupScratch::new(&plan, &mut s.col, &mut s.tmp);
                for i0 in (n0..n1).step_by(plan.images) {
                    let cnt = plan.images.min(n1 - i0);
                    let dy_image = |image| grad_image(g, dy, image);
                    accumulate_group(g, &plan, x, dy_image, i0, cnt, &mut scratch, part);
                }
            })
        });
    finish(g, &ws.partials[..plan.tasks * plan.slot], dw);
}

/// `dw += ` the output transform of the tasks' `partials` summed in task order.
pub(super) fn finish(g: &ConvGeom, partials: &[f32], dw: &mut [f32]) {
    weight::add_partials::<XIS>(g, partials, dw, add_output);
}

/// Asserts that [`applies`] holds for `g` and that `x`, `dy` and `dw` match it.
pub(super) fn check(g: &ConvGeom, x: Input, dy: OutputGrad, dw: &[f32]) {
    assert!(applies(g), "winograd F(3x3, 4x4): not taken for {g:?}");
    weight::check_lens(g, x, dy, dw);
    if let Input::Spikes(b) = x {
        assert_eq!(
            b.geometry(),
            (g.n, g.c_in, g.h * g.w),
            "spike bits of {g:?}"
        );
    }
}

/// How [`backward_weight`] splits the images of `g`: fixed image ranges (tasks) of groups,
/// and the layout of a group's transposed transforms.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Tiles per plane.
    tiles: usize,
    /// Images per group.
    pub(super) images: usize,
    /// Images per task (a multiple of `images`).
    pub(super) per: usize,
    /// Tasks, each with its own partial `D`.
    pub(super) tasks: usize,
    /// Floats of one partial `D`.
    pub(super) slot: usize,
    /// Distances between the matrices of `Vᵀ` and of `Uᵀ`.
    v_ld: usize,
    u_ld: usize,
    /// Floats of one channels-last grid.
    padded: usize,
}

impl Plan {
    pub(super) fn new(g: &ConvGeom) -> Self {
        let tiles = g.h.div_ceil(4) * g.w.div_ceil(4);
        let images = (GROUP_BYTES / (XIS * (g.c_in + g.c_out) * 4) / tiles).clamp(1, g.n.max(1));
        let ncols = images * tiles;
        let per = g.n.div_ceil(TASKS).div_ceil(images) * images;
        Plan {
            tiles,
            images,
            per,
            tasks: g.n.div_ceil(per.max(1)),
            slot: XIS * g.c_out * g.c_in,
            v_ld: g.c_in * ncols + XI_PAD,
            u_ld: g.c_out * ncols + XI_PAD,
            padded: outer::padded_len(g.c_in.max(g.c_out), g.h, g.w),
        }
    }

    /// Floats of the `col` and `tmp` scratch a task needs ([`GroupScratch::new`]).
    pub(super) fn scratch(&self) -> (usize, usize) {
        (XIS * self.v_ld + 2 * self.padded, XIS * self.u_ld)
    }

    /// The images `n0..n1` of task `t`.
    pub(super) fn task_images(&self, g: &ConvGeom, t: usize) -> (usize, usize) {
        (t * self.per, ((t + 1) * self.per).min(g.n))
    }
}

/// A task's scratch, split as [`accumulate_group`] uses it: `Vᵀ`, `Uᵀ` and one grid per
/// transform, so each keeps its zero border across the images.
pub(super) struct GroupScratch<'a> {
    vt: &'a mut [f32],
    ut: &'a mut [f32],
    x_grid: outer::Grid<'a>,
    dy_grid: outer::Grid<'a>,
}

impl<'a> GroupScratch<'a> {
    /// Splits `col` and `tmp` (at least [`Plan::scratch`] floats).
    pub(super) fn new(plan: &Plan, col: &'a mut [f32], tmp: &'a mut [f32]) -> Self {
        let (vt, grids) = col.split_at_mut(col.len() - 2 * plan.padded);
        let (x_grid, dy_grid) = grids.split_at_mut(plan.padded);
        GroupScratch {
            vt,
            ut: tmp,
            x_grid: outer::Grid::new(x_grid),
            dy_grid: outer::Grid::new(dy_grid),
        }
    }
}

/// `part += ` the products of the `cnt` images from `i0` (one group): their transposed
/// transforms of `x` and of `dy_image(image)`, then the 36 outer-product GEMMs.
#[allow(clippy::too_many_arguments)]
pub(super) fn accumulate_group<'d>(
    g: &ConvGeom,
    plan: &Plan,
    x: Input,
    dy_image: impl Fn(usize) -> Image<'d>,
    i0: usize,
    cnt: usize,
    s: &mut GroupScratch,
    part: &mut [f32],
) {
    debug_assert!(cnt <= plan.images);
    for j in 0..cnt {
        let image = i0 + j;
        let col0 = j * plan.tiles;
        let (dims, vt) = ((g.c_in, g.h, g.w), &mut *s.vt);
        let xi = weight::input_image(g, x, image);
        outer::transform_t(
            Transform::Input4,
            xi,
            dims,
            &mut s.x_grid,
            vt,
            plan.v_ld,
            col0,
        );
        let (dims, ut) = ((g.c_out, g.h, g.w), &mut *s.ut);
        let di = dy_image(image);
        outer::transform_t(
            Transform::Grad4,
            di,
            dims,
            &mut s.dy_grid,
            ut,
            plan.u_ld,
            col0,
        );
    }
    let mat = g.c_out * g.c_in;
    for xi in 0..XIS {
        outer::gemm(
            (g.c_out, g.c_in, cnt * plan.tiles),
            &s.ut[xi * plan.u_ld..],
            &s.vt[xi * plan.v_ld..],
            &mut part[xi * mat..][..mat],
        );
    }
}

/// Image `image` of `dy` as the transposed transforms take it (one formed through a batch
/// norm as they load it).
fn grad_image<'a>(g: &ConvGeom, dy: OutputGrad<'a>, image: usize) -> Image<'a> {
    let span = image * g.out_img()..(image + 1) * g.out_img();
    match dy {
        OutputGrad::Dense(dy) => Image::Dense(&dy[span]),
        OutputGrad::ThroughBn {
            grad,
            bn_input,
            affines,
        } => Image::ThroughBn {
            grad: &grad[span.clone()],
            input: &bn_input[span],
            affines,
        },
    }
}
