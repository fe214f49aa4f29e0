//! The weight gradient of a 3×3, stride-1, padding-1 conv by Winograd's F(3×3, 2×2).
//!
//! `dW[o][c][a][b] = Σ dY[o][y][x]·X[c][y + a − 1][x + b − 1]` is, per 2×2 tile of `dY`, a
//! 3×3 correlation of the 4×4 input tile with the 2×2 gradient tile: F(3×3, 2×2) computes it
//! with 16 products instead of 36, `dW = Aᵀ[(G·dy·Gᵀ) ⊙ (Bᵀ·x·B)]A`, where `Bᵀ` is F(2×2,
//! 3×3)'s (the input transform is shared with [`super::backward_input`]), `G` its 4×2 and
//! `Aᵀ = [[1,1,1,0],[0,1,−1,0],[0,1,1,−1]]`. Summed over tiles, the products become 16
//! GEMMs `D_ξ += U_ξ·V_ξᵀ` (`C_out × tiles` times `tiles × C_in`), 16/36 of im2col's work.
//! With AVX-512 and channel counts that fit its blocks they run as outer products on
//! transposed transforms (`winograd::outer`), without `matrixmultiply`'s packing.
//!
//! Deterministic for any thread count: the image ranges are fixed by the shape, each range
//! sums its groups in order into its own partial `D`, and the partials are added in range
//! order before the output transform.

use super::super::direct::Input;
use super::super::sparse::SpikeBits;
use super::super::{with_scratch, ConvGeom, ConvWorkspace, OutputGrad};
#[cfg(target_arch = "x86_64")]
use super::outer;
use super::{fits, group, tile_grid, Transforms, MAX_SPLIT, XI_PAD};
use crate::kernels::gemm::{sgemm, MatLayout};
use rayon::prelude::*;

/// Image ranges (tasks) of the weight gradient: a constant, so the summation order does not
/// depend on the thread count.
const TASKS: usize = 8;

/// Bytes of a partial `D` (`16·C_out·C_in` floats) up to which it stays in L2 beside a
/// group's transforms (see [`outer_group`]).
const SMALL_PARTIAL_BYTES: usize = 512 * 1024;
/// Bytes of one group's transformed tiles (`Vᵀ` and `Uᵀ`) that the outer-product path aims
/// for when its partial `D` is small (see [`outer_group`]).
const OUTER_GROUP_BYTES: usize = 640 * 1024;

/// Images per group of the outer-product path. Each group's GEMMs read and write the whole
/// partial `D` once, so where `D` is large (ResNet-19: 4–16 MB, beyond L2) the groups stay
/// as large as [`group`] makes them (criterion at 1 and 2 threads, 512 channels at 8×8: one
/// or two images a group were 7–34 % slower). Where `D` fits in L2 its traffic is cheap and
/// the transforms are what streams: groups whose `Vᵀ` and `Uᵀ` stay in L2 (two images for
/// mnist-cnn's conv2, 98 tile columns instead of 245) made its weight gradient 7–14 % faster.
fn outer_group(g: &ConvGeom) -> usize {
    if 16 * g.c_in * g.c_out * 4 > SMALL_PARTIAL_BYTES {
        return group(g);
    }
    let (th, tw) = tile_grid(g);
    let per_column = 16 * (g.c_in + g.c_out) * 4;
    (OUTER_GROUP_BYTES / per_column / (th * tw)).clamp(1, group(g))
}

/// `G·y·Gᵀ` of every 2×2 tile of one `dY` plane (zeros past the edge), written to
/// `u[ξ·ld + tile]`.
pub(super) fn transform_grad(plane: &[f32], h: usize, w: usize, u: &mut [f32], ld: usize) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    // Rows 2ty and 2ty + 1 of the tile row, each split into even and odd columns.
    let mut rows = [[0.0f32; 2 * MAX_SPLIT]; 2];
    let mut comb = [[0.0f32; 2 * MAX_SPLIT]; 4];
    for ty in 0..th {
        for (i, buf) in rows.iter_mut().enumerate() {
            let (even, odd) = buf[..2 * tw].split_at_mut(tw);
            let y = 2 * ty + i;
            if y >= h {
                even.fill(0.0);
                odd.fill(0.0);
                continue;
            }
            let row = &plane[y * w..][..w];
            let pairs = row.chunks_exact(2);
            if let [last] = pairs.remainder() {
                even[w / 2] = *last;
                odd[w / 2] = 0.0;
            }
            for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                *e = pair[0];
                *o = pair[1];
            }
        }
        // G on the rows: y0, (y0 + y1)/2, (y0 − y1)/2, y1.
        let [y0, y1] = &rows;
        for k in 0..2 * tw {
            comb[0][k] = y0[k];
            comb[1][k] = 0.5 * (y0[k] + y1[k]);
            comb[2][k] = 0.5 * (y0[k] - y1[k]);
            comb[3][k] = y1[k];
        }
        // G on the columns: e, (e + o)/2, (e − o)/2, o.
        for (i, r) in comb.iter().enumerate() {
            let (e, o) = r[..2 * tw].split_at(tw);
            let at = |j: usize| (4 * i + j) * ld + ty * tw;
            u[at(0)..][..tw].copy_from_slice(e);
            for (x, d) in u[at(1)..][..tw].iter_mut().enumerate() {
                *d = 0.5 * (e[x] + o[x]);
            }
            for (x, d) in u[at(2)..][..tw].iter_mut().enumerate() {
                *d = 0.5 * (e[x] - o[x]);
            }
            u[at(3)..][..tw].copy_from_slice(o);
        }
    }
}

/// `k[a·3 + b] += (Aᵀ·d·A)[a][b]` for the 4×4 `d[4i + j]`.
fn add_output(d: &[f32; 16], k: &mut [f32]) {
    let col = |j: usize| {
        let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
        [d0 + d1 + d2, d1 - d2, d1 + d2 - d3]
    };
    let s = [col(0), col(1), col(2), col(3)];
    for (a, out) in k.chunks_exact_mut(3).enumerate() {
        let (s0, s1, s2, s3) = (s[0][a], s[1][a], s[2][a], s[3][a]);
        out[0] += s0 + s1 + s2;
        out[1] += s1 - s2;
        out[2] += s1 + s2 - s3;
    }
}

/// `dw += ∂L/∂W` from the input `x` and `dy = ∂L/∂y` for a conv that [`fits`]: by
/// F(3×3, 4×4) where its outer-product path applies (`weight4`), else by F(3×3, 2×2).
///
/// # Panics
/// If `g` does not fit or a slice length disagrees with `g`.
pub fn backward_weight(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    #[cfg(target_arch = "x86_64")]
    if takes_f4x4(g) {
        return super::weight4::backward_weight(g, Input::Dense(x), OutputGrad::Dense(dy), dw, ws);
    }
    let dy = OutputGrad::Dense(dy);
    backward_weight_with(Transforms::detect(g), g, Input::Dense(x), dy, dw, ws);
}

/// True if [`backward_weight`] (and [`backward_weight_spikes`]) take `g` by F(3×3, 4×4) on
/// this CPU: 36 products per 4×4 tile of `dY` where its partial sums stay in L2.
pub fn takes_f4x4(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::weight4::applies(g)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// True if [`backward_weight_spikes`] takes `g` on this CPU: the transposed transforms read
/// spike bits straight into their channels-last copy (AVX-512, channel counts that fit the
/// outer-product blocks).
pub fn reads_spikes(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        fits(g) && Transforms::detect(g) == Transforms::Avx512 && outer::applies(g.c_in, g.c_out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// [`backward_weight`] of a spike input given as its bits, with the same result bits as on
/// the unpacked floats, but no `[N, C, H, W]` f32 copy of the input (`mnist-cnn`'s conv2:
/// 6.4 MB written and read again per step).
///
/// # Panics
/// If [`reads_spikes`] is false for `g`, or a length disagrees with `g`.
pub fn backward_weight_spikes(
    g: &ConvGeom,
    x: &SpikeBits,
    dy: &[f32],
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    backward_weight_spikes_from(g, x, OutputGrad::Dense(dy), dw, ws);
}

/// [`backward_weight_spikes`] from `dy` given as an [`OutputGrad`] (formed image by image if
/// it comes through a batch norm): the same bits as on the formed `∂L/∂y`.
///
/// # Panics
/// As [`backward_weight_spikes`], or if `dy`'s parts disagree.
pub fn backward_weight_spikes_from(
    g: &ConvGeom,
    x: &SpikeBits,
    dy: OutputGrad,
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    assert!(reads_spikes(g), "winograd: spike bits not taken for {g:?}");
    #[cfg(target_arch = "x86_64")]
    if takes_f4x4(g) {
        return super::weight4::backward_weight(g, Input::Spikes(x), dy, dw, ws);
    }
    backward_weight_with(Transforms::detect(g), g, Input::Spikes(x), dy, dw, ws);
}

/// [`backward_weight`] with the given transforms.
pub(super) fn backward_weight_with(
    tf: Transforms,
    g: &ConvGeom,
    x: Input,
    dy: OutputGrad,
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    assert!(
        fits(g),
        "winograd: needs a 3x3 stride-1 pad-1 conv, got {g:?}"
    );
    check_lens(g, x, dy, dw);
    if g.n == 0 {
        return;
    }
    let (th, tw) = tile_grid(g);
    let (tiles, plane) = (th * tw, g.h * g.w);
    #[cfg(target_arch = "x86_64")]
    let outer = tf == Transforms::Avx512 && outer::applies(g.c_in, g.c_out);
    #[cfg(not(target_arch = "x86_64"))]
    let outer = false;
    if let Input::Spikes(b) = x {
        assert!(
            outer && b.geometry() == (g.n, g.c_in, plane),
            "winograd backward_weight: spike bits need the outer-product path and {g:?}"
        );
    }
    let gs = if outer { outer_group(g) } else { group(g) };
    let ncols = gs * tiles;
    let per = g.n.div_ceil(TASKS).div_ceil(gs) * gs;
    let tasks = g.n.div_ceil(per);
    let slot = 16 * g.c_out * g.c_in;
    if ws.partials.len() < tasks * slot {
        ws.partials.resize(tasks * slot, 0.0);
    }
    let (v_ld, u_ld) = (g.c_in * ncols + XI_PAD, g.c_out * ncols + XI_PAD);
    let d_layout = MatLayout::row_major(g.c_out, g.c_in);
    // Where the outer-product kernel applies, the transforms write `Vᵀ` and `Uᵀ` (the same
    // sizes) and the `col` scratch also holds the channels-last image grid after `Vᵀ`.
    #[cfg(target_arch = "x86_64")]
    let padded = match outer {
        true => outer::padded_len(g.c_in.max(g.c_out), g.h, g.w),
        false => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let padded = 0;
    ws.partials[..tasks * slot]
        .par_chunks_mut(slot)
        .enumerate()
        .for_each(|(t, part)| {
            // An image of `dy` formed through a batch norm (`OutputGrad::ThroughBn`).
            let mut formed = Vec::new();
            with_scratch(16 * v_ld + padded, 16 * u_ld, |s| {
                let (n0, n1) = (t * per, ((t + 1) * per).min(g.n));
                if outer {
                    part.fill(0.0);
                }
                for i0 in (n0..n1).step_by(gs) {
                    let cnt = gs.min(n1 - i0);
                    let cols = cnt * tiles;
                    for j in 0..cnt {
                        let di = dy.image(i0 + j, g.c_out, g.out_plane(), &mut formed);
                        #[cfg(target_arch = "x86_64")]
                        if outer {
                            use outer::Transform;
                            let xi = input_image(g, x, i0 + j);
                            let (vt, pad) = s.col.split_at_mut(16 * v_ld);
                            // A fresh grid per image, shared by both transforms, so each
                            // fills its border (`weight4` keeps one grid per transform).
                            let pad = &mut outer::Grid::new(pad);
                            let (dims, col0) = ((g.c_in, g.h, g.w), j * tiles);
                            outer::transform_t(Transform::Input, xi, dims, pad, vt, v_ld, col0);
                            let dims = (g.c_out, g.h, g.w);
                            let ut = &mut s.tmp;
                            let di = outer::Image::Dense(di);
                            outer::transform_t(Transform::Grad, di, dims, pad, ut, u_ld, col0);
                            continue;
                        }
                        let Input::Dense(x) = x else {
                            unreachable!("spike bits are asserted to take the outer path")
                        };
                        let xi = &x[(i0 + j) * g.in_img()..][..g.in_img()];
                        for (c, pl) in xi.chunks_exact(plane).enumerate() {
                            tf.input(pl, g.h, g.w, &mut s.col[c * ncols + j * tiles..], v_ld);
                        }
                        for (o, pl) in di.chunks_exact(plane).enumerate() {
                            let u = &mut s.tmp[o * ncols + j * tiles..];
                            tf.grad(pl, g.h, g.w, u, u_ld);
                        }
                    }
                    let beta = if i0 == n0 { 0.0 } else { 1.0 };
                    for xi in 0..16 {
                        #[cfg(target_arch = "x86_64")]
                        if outer {
                            outer::gemm(
                                (g.c_out, g.c_in, cols),
                                &s.tmp[xi * u_ld..],
                                &s.col[xi * v_ld..],
                                &mut part[xi * g.c_out * g.c_in..][..g.c_out * g.c_in],
                            );
                            continue;
                        }
                        sgemm(
                            1.0,
                            &s.tmp[xi * u_ld..],
                            MatLayout::strided(g.c_out, cols, ncols),
                            &s.col[xi * v_ld..],
                            MatLayout::strided(g.c_in, cols, ncols).t(),
                            beta,
                            &mut part[xi * g.c_out * g.c_in..][..g.c_out * g.c_in],
                            d_layout,
                        );
                    }
                }
            })
        });
    add_partials::<16>(g, &ws.partials[..tasks * slot], dw, add_output);
}

/// Asserts that the slice lengths match `g`.
pub(super) fn check_lens(g: &ConvGeom, x: Input, dy: OutputGrad, dw: &[f32]) {
    let x_len = match x {
        Input::Dense(x) => x.len(),
        Input::Spikes(b) => b.len(),
    };
    assert!(
        x_len == g.n * g.in_img()
            && dw.len() == g.weight_len()
            && dy.len() == g.n * g.out_img()
            && dy.is_consistent(g.c_out),
        "winograd backward_weight: slice lengths do not match {g:?}"
    );
}

/// Image `image` of the input `x` as the transposed transforms take it.
#[cfg(target_arch = "x86_64")]
pub(super) fn input_image<'a>(g: &ConvGeom, x: Input<'a>, image: usize) -> outer::Image<'a> {
    match x {
        Input::Dense(x) => outer::Image::Dense(&x[image * g.in_img()..][..g.in_img()]),
        Input::Spikes(b) => {
            let wpp = b.plane_words();
            outer::Image::Spikes {
                words: &b.words()[image * g.c_in * wpp..][..g.c_in * wpp],
                plane_words: wpp,
                scale: b.scale(),
            }
        }
    }
}

/// `dw += output(Σ partials)`: the tasks' partial `D`s (`XIS` matrices `C_out × C_in` each)
/// added in task order per weight, then taken through the output transform `add_output`.
pub(super) fn add_partials<const XIS: usize>(
    g: &ConvGeom,
    partials: &[f32],
    dw: &mut [f32],
    add_output: fn(&[f32; XIS], &mut [f32]),
) {
    /// Input channels summed at once: their `D`s fit on the stack (9 KB for F(3×3, 4×4)).
    const CHANNELS: usize = 64;
    let mat = g.c_out * g.c_in;
    dw.par_chunks_mut(g.c_in * 9)
        .enumerate()
        .for_each(|(o, row)| {
            for (c0, ks) in row.chunks_mut(CHANNELS * 9).enumerate() {
                let c0 = c0 * CHANNELS;
                let cs = ks.len() / 9;
                // ξ-major, so each run of channels adds as vectors (channel-major, the adds
                // were scalar stores `XIS` floats apart: 2 % of a mnist-cnn step on an
                // AVX-512 Xeon).
                let mut d = [[0.0f32; CHANNELS]; XIS];
                // Each weight's terms in the same order (task, then ξ by ξ), but read as
                // contiguous runs of channels: read weight by weight, the `XIS` terms lie
                // `C_out·C_in` floats apart (8 KB for mnist-cnn's conv2), all in one L1 set.
                for part in partials.chunks_exact(XIS * mat) {
                    for (xi, dx) in d.iter_mut().enumerate() {
                        let run = &part[xi * mat + o * g.c_in + c0..][..cs];
                        for (dc, &v) in dx.iter_mut().zip(run) {
                            *dc += v;
                        }
                    }
                }
                for (c, k) in ks.chunks_exact_mut(9).enumerate() {
                    add_output(&std::array::from_fn(|xi| d[xi][c]), k);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spike_bits_give_the_unpacked_floats_gradient_bits() {
        // mnist-cnn's conv2 shape (one and several words per plane), a 32-wide plane, odd sizes.
        for &(n, c_in, h, w, c_out) in
            &[(5, 32, 14, 14, 64), (3, 64, 9, 11, 16), (2, 32, 32, 32, 32)]
        {
            let g = ConvGeom::new(n, c_in, h, w, c_out, 3, 1, 1).unwrap();
            if !reads_spikes(&g) {
                return;
            }
            let mut seed = 7u32;
            let mut next = || {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                seed
            };
            let x: Vec<f32> = (0..n * g.in_img())
                .map(|_| if next() >> 30 == 0 { 1.5 } else { 0.0 })
                .collect();
            let dy: Vec<f32> = (0..n * g.out_img())
                .map(|_| (next() >> 8) as f32 / (1 << 24) as f32 - 0.5)
                .collect();
            let bits = SpikeBits::from_f32(&x, n, c_in, h * w, 1.5);
            let mut ws = ConvWorkspace::default();
            let mut dense = vec![0.25; g.weight_len()];
            backward_weight(&g, &x, &dy, &mut dense, &mut ws);
            let mut spikes = vec![0.25; g.weight_len()];
            backward_weight_spikes(&g, &bits, &dy, &mut spikes, &mut ws);
            let same = dense
                .iter()
                .zip(&spikes)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{g:?}");
        }
    }
}
