//! A conv's input and weight gradients in one pass over `∂L/∂y`: F(4×4, 3×3) for the input
//! gradient ([`super::f43`]) and F(3×3, 4×4) for the weight gradient ([`super::weight4`]),
//! chunk by chunk of images.
//!
//! Why: run one after the other, each gradient streams all of `∂L/∂y` from memory — for
//! `mnist-cnn`'s conv2 through its batch norm, two 12.8 MB streams (the batch norm's output
//! gradient and input) read twice a step, and the loads of the second pass were the hottest
//! samples of the weight gradient's transposed transforms. Here each chunk of images is formed
//! once into a buffer that stays in L2, and both gradients read it there.
//!
//! The same bits as the two kernels apart: the weight gradient keeps its image ranges (each
//! sums into its own partial, the partials added in range order), and both GEMMs run one FMA
//! chain per element in order — over the channels for the input gradient's
//! ([`TilePlan::group_invariant`]), over the tiles onto the loaded partial for the weight
//! gradient's — so where a chunk cuts a group changes no bit (tested, also with chunks that
//! cut the weight gradient's groups). Chunks hold whole groups of both for speed: a cut input
//! gradient group runs its GEMM on part of a register block.
//!
//! Measured (criterion `conv2d_through_bn`, Zen 4, apart and joined back to back in one run,
//! two runs each): 1 thread 22.3 → 19.6 and 23.8 → 21.8 ms, 2 threads 12.1 → 10.6 and
//! 12.0 → 11.4 ms. Chunks of two images (the input gradient's groups cut to 32 columns) were
//! slower than six (13.9 / 13.5 against 11.7 / 11.5 ms at 2 threads), four in between.

use super::super::direct::Input;
use super::super::{with_scratch, ConvGeom, ConvWorkspace, OutputGrad};
use super::f43::{self, F43};
use super::outer::Image;
use super::weight4::{self, GroupScratch};
use super::{fits, transform_group, InputVariant, TilePlan, Transforms};
use rayon::prelude::*;

/// Most images a chunk holds: with `mnist-cnn`'s conv2 six (the least common multiple of the
/// input gradient's three and the weight gradient's two a group), 300 KB of `∂L/∂y`.
const MAX_CHUNK: usize = 8;

/// True if [`backward`] takes `g` on this CPU: both gradients run on the kernels it joins, and
/// the input gradient's products do not depend on its groups.
pub(super) fn applies(g: &ConvGeom) -> bool {
    fits(g) && f43::preferred(g) && weight4::applies(g) && TilePlan::new::<F43>(g).group_invariant()
}

/// Images per chunk: a whole number of weight-gradient groups, and of input-gradient groups
/// where that stays within [`MAX_CHUNK`] (the bits do not depend on it, the speed does).
fn chunk_images(input_group: usize, weight_group: usize) -> usize {
    let lcm = input_group / gcd(input_group, weight_group) * weight_group;
    if lcm <= MAX_CHUNK {
        lcm
    } else {
        weight_group * input_group.div_ceil(weight_group)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `dx ← ∂L/∂x` (overwritten) and `dw += ∂L/∂W` from the input `x` and `dy = ∂L/∂y`: the bits
/// of [`super::backward_input_from`] and [`super::weight::backward_weight_spikes_from`] (or
/// [`super::weight::backward_weight`] for a dense `x`).
///
/// # Panics
/// If [`applies`] is false for `g`, or a length disagrees with `g`.
pub(super) fn backward(
    g: &ConvGeom,
    x: Input,
    dy: OutputGrad,
    weight: &[f32],
    dw: &mut [f32],
    dx: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    assert!(applies(g), "winograd joint backward: not taken for {g:?}");
    weight4::check(g, x, dy, dw);
    assert!(
        dx.len() == g.n * g.in_img() && weight.len() == g.weight_len(),
        "winograd joint backward: slice lengths do not match {g:?}"
    );
    if g.n == 0 {
        return;
    }
    let tf = F43(Transforms::detect(g));
    let (ip, wp) = (TilePlan::new::<F43>(g), weight4::Plan::new(g));
    let chunk = chunk_images(ip.images, wp.images);
    let mut wt = crate::buffer_pool::overwritable(36 * g.c_in * g.c_out);
    F43::weight(g, weight, &mut wt);
    let ((v_len, m_len), (col_len, tmp_len)) = (ip.scratch(), wp.scratch());
    let (img, formed_len) = (g.out_img(), chunk * g.out_img());
    let slots = wp.tasks * wp.slot;
    ws.partials.resize(ws.partials.len().max(slots), 0.0);
    ws.partials[..slots]
        .par_chunks_mut(wp.slot)
        .zip(dx.par_chunks_mut(wp.per * g.in_img()))
        .enumerate()
        .for_each(|(t, (part, dxc))| {
            let (n0, n1) = wp.task_images(g, t);
            debug_assert_eq!(dxc.len(), (n1 - n0) * g.in_img());
            part.fill(0.0);
            with_scratch(formed_len + v_len.max(col_len), m_len.max(tmp_len), |s| {
                let (formed, col) = s.col.split_at_mut(formed_len);
                for c0 in (n0..n1).step_by(chunk) {
                    let cnt = chunk.min(n1 - c0);
                    let images = form(dy, c0, cnt, img, g.out_plane(), formed);
                    let dense = OutputGrad::Dense(images);
                    for i in (0..cnt).step_by(ip.images) {
                        let k = ip.images.min(cnt - i);
                        let dxg = &mut dxc[(c0 - n0 + i) * g.in_img()..][..k * g.in_img()];
                        let scratch = (&mut col[..], &mut s.tmp[..]);
                        // A dense `dy` forms nothing: no plane buffer needed.
                        transform_group(
                            tf,
                            g,
                            &ip,
                            dense,
                            i,
                            &wt,
                            dxg,
                            scratch,
                            &mut Vec::new(),
                            None,
                        );
                    }
                    let mut gs = GroupScratch::new(&wp, col, &mut s.tmp);
                    let dy_image =
                        |image: usize| Image::Dense(&images[(image - c0) * img..][..img]);
                    for i in (0..cnt).step_by(wp.images) {
                        let k = wp.images.min(cnt - i);
                        weight4::accumulate_group(g, &wp, x, dy_image, c0 + i, k, &mut gs, part);
                    }
                }
            })
        });
    weight4::finish(g, &ws.partials[..slots], dw);
    crate::buffer_pool::give_back(wt);
}

/// The `cnt` images of `dy` from image `first` (`img` floats each, planes of `plane`): a
/// slice of a dense `dy`, or formed into `buf` through the batch norm.
fn form<'a: 'b, 'b>(
    dy: OutputGrad<'a>,
    first: usize,
    cnt: usize,
    img: usize,
    plane: usize,
    buf: &'b mut [f32],
) -> &'b [f32] {
    match dy {
        OutputGrad::Dense(d) => &d[first * img..][..cnt * img],
        OutputGrad::ThroughBn { .. } => {
            let dst = &mut buf[..cnt * img];
            dy.read_images(first, img / plane, plane, dst);
            dst
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::sparse::SpikeBits;
    use super::super::super::tests::{rand_grad_affines, rand_vec, same_bits as same};
    use super::super::{backward_input, backward_input_from, weight};
    use super::*;

    /// Both gradients in one pass are the bits of the two kernels apart: through a batch norm
    /// from spike bits (`mnist-cnn`'s conv2), and dense, with batches that end mid-chunk and
    /// mid-group, one image, and channel counts either way round.
    #[test]
    fn one_pass_gives_the_bits_of_the_two_kernels_apart() {
        let mut seed = 5u64;
        let mut taken = 0;
        for (n, c_in, h, w, c_out) in [
            (40, 32, 14, 14, 64),
            (13, 32, 14, 14, 64),
            (1, 32, 14, 14, 64),
            (9, 64, 12, 16, 32),
            (7, 32, 16, 13, 32),
        ] {
            let g = ConvGeom::new(n, c_in, h, w, c_out, 3, 1, 1).unwrap();
            if !applies(&g) {
                eprintln!("{g:?}: the joint backward is not taken on this CPU");
                continue;
            }
            taken += 1;
            let len = n * g.out_img();
            let (grad, bn_input) = (rand_vec(len, &mut seed), rand_vec(len, &mut seed));
            let affines = rand_grad_affines(c_out, &mut seed);
            let through = OutputGrad::ThroughBn {
                grad: &grad,
                bn_input: &bn_input,
                affines: &affines,
            };
            let weight = rand_vec(g.weight_len(), &mut seed);
            let dw0 = rand_vec(g.weight_len(), &mut seed);
            let x: Vec<f32> = rand_vec(n * g.in_img(), &mut seed)
                .iter()
                .map(|&v| if v > 0.4 { 0.5 } else { 0.0 })
                .collect();
            let bits = SpikeBits::from_f32(&x, n, c_in, h * w, 0.5);
            let mut ws = ConvWorkspace::default();
            let dx_len = n * g.in_img();

            let (mut want_dw, mut got_dw) = (dw0.clone(), dw0.clone());
            let (mut want_dx, mut got_dx) = (vec![0.0; dx_len], vec![f32::NAN; dx_len]);
            weight::backward_weight_spikes_from(&g, &bits, through, &mut want_dw, &mut ws);
            backward_input_from(&g, through, &weight, &mut want_dx);
            let spikes = Input::Spikes(&bits);
            backward(
                &g,
                spikes,
                through,
                &weight,
                &mut got_dw,
                &mut got_dx,
                &mut ws,
            );
            assert!(
                same(&want_dx, &got_dx),
                "{g:?}: input gradient through a batch norm"
            );
            assert!(
                same(&want_dw, &got_dw),
                "{g:?}: weight gradient through a batch norm"
            );

            let dy = through.to_dense(&g);
            let (mut want_dw, mut got_dw) = (dw0.clone(), dw0.clone());
            let (mut want_dx, mut got_dx) = (vec![0.0; dx_len], vec![f32::NAN; dx_len]);
            weight::backward_weight(&g, &x, &dy, &mut want_dw, &mut ws);
            backward_input(&g, &dy, &weight, &mut want_dx);
            let dense = (Input::Dense(&x), OutputGrad::Dense(&dy));
            backward(
                &g,
                dense.0,
                dense.1,
                &weight,
                &mut got_dw,
                &mut got_dx,
                &mut ws,
            );
            assert!(same(&want_dx, &got_dx), "{g:?}: dense input gradient");
            assert!(same(&want_dw, &got_dw), "{g:?}: dense weight gradient");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert_eq!(taken, 5, "every shape is meant to take the joint path");
        }
    }

    #[test]
    fn chunks_hold_whole_groups_of_both_kinds_where_small() {
        assert_eq!(chunk_images(3, 2), 6);
        assert_eq!(chunk_images(2, 2), 2);
        assert_eq!(chunk_images(1, 3), 3);
        // lcm 15 is too many images: whole weight groups only.
        assert_eq!(chunk_images(3, 5), 5);
        assert_eq!(chunk_images(7, 2), 8);
    }
}
