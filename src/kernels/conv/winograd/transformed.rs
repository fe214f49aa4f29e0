//! The driver every F(m×m, 3×3) input gradient (and the forward) runs through: per group of
//! images, the tile transforms of `dY` into `V`, the `(m + 2)²` GEMMs `M_ξ = Ŵ_ξ·V_ξ`, and the
//! output transforms of `M` into `dX` ([`transformed_conv`], one group: [`transform_group`]).

use super::super::super::bn::{plane_moments, PlaneMoments};
use super::super::super::gemm::{sgemm, MatLayout};
use super::super::{with_scratch, ConvGeom, OutputGrad};
use super::{tile_gemm, InputVariant, XI_PAD};
use rayon::prelude::*;

/// How [`transformed_conv`] groups the images of `g` for the tile variant `V`: group sizes
/// and the layout of the `V` and `M` scratch.
#[derive(Clone, Copy, Debug)]
pub(in crate::kernels::conv) struct TilePlan {
    /// `(m + 2)²`: transformed values per tile.
    xis: usize,
    /// Tiles per plane.
    tiles: usize,
    /// True if the GEMMs run on [`tile_gemm`] (no packing), else on `matrixmultiply`.
    unpacked: bool,
    /// Images per group.
    pub(super) images: usize,
    /// Tile columns of a full group.
    ncols: usize,
    /// Distance between the matrices of `V` and of `M`.
    v_ld: usize,
    m_ld: usize,
}

impl TilePlan {
    pub(super) fn new<V: InputVariant>(g: &ConvGeom) -> Self {
        let xis = (V::TILE + 2) * (V::TILE + 2);
        let tiles = g.h.div_ceil(V::TILE) * g.w.div_ceil(V::TILE);
        let unpacked = tile_gemm::applies(g.c_in, g.c_out);
        // The unpacked GEMM has no packing to spread over many columns, so its groups fill
        // one register block and no more: `V` and `M` then stay in L2 between the transforms
        // and the GEMMs (criterion, mnist-cnn's conv2 at 48 instead of 256 columns: forward
        // −17 %, input gradient −20 %, at 1 and 2 threads). `matrixmultiply`'s packing wants
        // the 256 (at 48 or 96 ResNet-19's layers were 10–35 % slower).
        let target = if unpacked {
            tile_gemm::BLOCK_COLS
        } else {
            V::COLS
        };
        // At least four groups where there are the images, so both threads have work (F(4×4)
        // at 8×8 would otherwise put a 64-image batch in one group).
        let images = (target / tiles).min(g.n.div_ceil(4)).max(1);
        let ncols = images * tiles;
        // The matrices of V (and of M) sit `XI_PAD` floats further apart than their size: a
        // tile transform touches all of them at once, and power-of-two distances put them in
        // one L1 set.
        let (v_ld, m_ld) = (g.c_out * ncols + XI_PAD, g.c_in * ncols + XI_PAD);
        TilePlan {
            xis,
            tiles,
            unpacked,
            images,
            ncols,
            v_ld,
            m_ld,
        }
    }

    /// Floats of the `V` and `M` scratch.
    pub(super) fn scratch(&self) -> (usize, usize) {
        (self.xis * self.v_ld, self.xis * self.m_ld)
    }

    /// True if every output column is one FMA chain over the channels in order
    /// ([`tile_gemm`]), so a tile's result does not depend on the group it is in.
    pub(super) fn group_invariant(&self) -> bool {
        self.unpacked
    }
}

/// The body of [`super::input_gradient`] with the weight already transformed (`wt`, as
/// [`InputVariant::weight`] writes it): `dx` ← the "same" correlation of `dy` (`C_out`
/// channels) that `wt` stands for, `C_in` channels. The forward runs through here too, with
/// the channel counts swapped ([`super::f43::forward`]).
pub(super) fn transformed_conv<V: InputVariant>(
    tf: V,
    g: &ConvGeom,
    dy: OutputGrad,
    wt: &[f32],
    dx: &mut [f32],
    moments: Option<&mut [PlaneMoments]>,
) {
    let plan = TilePlan::new::<V>(g);
    debug_assert_eq!(wt.len(), plan.xis * g.c_in * g.c_out);
    let (v_len, m_len) = plan.scratch();
    let per = super::super::groups_per_task(g.n.div_ceil(plan.images)) * plan.images;
    let tasks = g.n.div_ceil(per);
    let mut moments: Vec<Option<&mut [PlaneMoments]>> = match moments {
        Some(all) => {
            assert_eq!(all.len(), g.n * g.c_in, "winograd: plane moments length");
            all.chunks_mut(per * g.c_in).map(Some).collect()
        }
        None => (0..tasks).map(|_| None).collect(),
    };
    dx.par_chunks_mut(per * g.in_img())
        .zip(moments.par_iter_mut())
        .enumerate()
        .for_each(|(task, (dxc, moments))| {
            // A plane of `dy` formed through a batch norm (`OutputGrad::ThroughBn`).
            let mut formed = Vec::new();
            let group_planes = plan.images * g.c_in;
            let mut moments = moments.as_deref_mut().map(|m| m.chunks_mut(group_planes));
            with_scratch(v_len, m_len, |s| {
                for (group, dxg) in dxc.chunks_mut(plan.images * g.in_img()).enumerate() {
                    let first = task * per + group * plan.images;
                    let (v, m) = (&mut s.col[..], &mut s.tmp[..]);
                    let scratch = (v, m);
                    let mm = moments.as_mut().and_then(|it| it.next());
                    transform_group(tf, g, &plan, dy, first, wt, dxg, scratch, &mut formed, mm);
                }
            })
        });
}

/// One group of [`transformed_conv`]: `dxg` (`cnt ≤ plan.images` images) ← the conv of the
/// `cnt` images of `dy` from image `first`, through the scratch `(v, m)` of
/// [`TilePlan::scratch`] (`formed` holds a plane formed through a batch norm); `moments`, if
/// given, gets the [`PlaneMoments`] of `dxg`'s planes (image-major), taken after the group's
/// output transforms, while its planes are in L2.
#[allow(clippy::too_many_arguments)]
pub(super) fn transform_group<V: InputVariant>(
    tf: V,
    g: &ConvGeom,
    plan: &TilePlan,
    dy: OutputGrad,
    first: usize,
    wt: &[f32],
    dxg: &mut [f32],
    (v, m): (&mut [f32], &mut [f32]),
    formed: &mut Vec<f32>,
    moments: Option<&mut [PlaneMoments]>,
) {
    let TilePlan {
        xis,
        tiles,
        ncols,
        v_ld,
        m_ld,
        ..
    } = *plan;
    let plane = g.h * g.w;
    let cnt = dxg.len() / g.in_img();
    debug_assert!(cnt <= plan.images && cnt * g.in_img() == dxg.len());
    let cols = cnt * tiles;
    // Plane `o` of the group's image `j` in `dy`.
    let at = |j: usize, o: usize| ((first + j) * g.c_out + o) * plane;
    // V_ξ is `C_out × cols` at `ξ·v_ld`, rows `ncols` apart. Channel by channel, so each row
    // of V_ξ is written from start to end: with few tiles per image, image by image would
    // leave partial cache lines in 36 matrices at once (F(4×4) at 8×8: 16 bytes per image).
    for o in 0..g.c_out {
        // One short stream per image, which the hardware prefetchers do not follow: the next
        // channel's planes come in during this one's.
        if o + 1 < g.c_out {
            for j in 0..cnt {
                dy.prefetch(at(j, o + 1), plane);
            }
        }
        for j in 0..cnt {
            let pl = dy.span(at(j, o), plane, o, formed);
            tf.input(pl, g.h, g.w, &mut v[o * ncols + j * tiles..], v_ld);
        }
    }
    for xi in 0..xis {
        let a = &wt[xi * g.c_in..];
        let b = &v[xi * v_ld..];
        let c = &mut m[xi * m_ld..];
        if plan.unpacked {
            let dims = (g.c_in, g.c_out, cols);
            tile_gemm::gemm(dims, a, xis * g.c_in, b, ncols, c, ncols);
            continue;
        }
        sgemm(
            1.0,
            a,
            MatLayout::strided(g.c_out, g.c_in, xis * g.c_in).t(),
            b,
            MatLayout::strided(g.c_out, cols, ncols),
            0.0,
            c,
            MatLayout::strided(g.c_in, cols, ncols),
        );
    }
    for c in 0..g.c_in {
        for j in 0..cnt {
            let pl = &mut dxg[j * g.in_img() + c * plane..][..plane];
            tf.output(&m[c * ncols + j * tiles..], m_ld, g.h, g.w, pl);
        }
    }
    // After the whole group, not plane by plane: read right after the transform's masked
    // stores, a plane's loads waited for them to retire (`plane_moments` took 2.3 % of a
    // `mnist-cnn` step that way); the group's planes are still in L2.
    if let Some(mm) = moments {
        for (mm, plane) in mm.iter_mut().zip(dxg.chunks_exact(plane)) {
            *mm = plane_moments(plane);
        }
    }
}
