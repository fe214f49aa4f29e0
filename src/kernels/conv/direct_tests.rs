//! The direct kernels against the f64 reference convolution of `conv_tests.rs`.

use super::super::tests::{assert_close, rand_vec, reference};
use super::*;

/// `n, c_in, h, w, c_out`: one to three row blocks with short last ones (1, 7, 15 rows),
/// planes 1, 3 and 14 wide, odd input channel counts, several tasks, `mnist-cnn`'s conv2.
const SHAPES: &[[usize; 5]] = &[
    [3, 4, 5, 7, 8],
    [9, 3, 15, 14, 12],
    [1, 1, 1, 1, 4],
    [75, 5, 7, 3, 4],
    [4, 32, 14, 14, 64],
];

/// About a third of the elements `scale`, the rest 0.
fn spikes(len: usize, scale: f32, seed: &mut u64) -> Vec<f32> {
    rand_vec(len, seed)
        .into_iter()
        .map(|v| if v > 0.35 { scale } else { 0.0 })
        .collect()
}

/// The forward into a NaN-filled output (every element must be written).
fn output(g: &ConvGeom, x: Input, w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NAN; g.n * g.out_img()];
    forward(g, x, w, Some(b), &mut y);
    y
}

#[test]
fn direct_forward_matches_the_reference_convolution_for_dense_and_spike_inputs() {
    let mut seed = 31;
    for s in SHAPES {
        let g = ConvGeom::new(s[0], s[1], s[2], s[3], s[4], 3, 1, 1).unwrap();
        if !applies(&g) {
            eprintln!("no AVX-512F: direct conv kernels not tested");
            return;
        }
        let w = rand_vec(g.weight_len(), &mut seed);
        let b = rand_vec(g.c_out, &mut seed);
        let dy = vec![0.0; g.n * g.out_img()];
        let dense = rand_vec(g.n * g.in_img(), &mut seed);
        let spike = spikes(g.n * g.in_img(), 0.75, &mut seed);
        let bits = SpikeBits::from_f32(&spike, g.n, g.c_in, g.h * g.w, 0.75);
        for (tag, x, input) in [
            ("dense", &dense, Input::Dense(&dense)),
            ("spikes", &spike, Input::Spikes(&bits)),
        ] {
            let r = reference(&g, x, &w, &b, &dy);
            assert_close(
                &format!("{s:?} {tag} y"),
                &output(&g, input, &w, &b),
                &r.y,
                &[],
            );
        }
        // Bits and their f32 expansion are the same input: the same bits out.
        let from_f32 = output(&g, Input::Dense(&spike), &w, &b);
        let from_bits = output(&g, Input::Spikes(&bits), &w, &b);
        assert!(from_f32 == from_bits, "{s:?}: bits and f32 spikes differ");
    }
}

#[test]
fn direct_results_are_bit_identical_for_1_and_4_threads() {
    let mut seed = 37;
    let g = ConvGeom::new(75, 7, 9, 14, 12, 3, 1, 1).unwrap();
    if !applies(&g) {
        return;
    }
    let x = rand_vec(g.n * g.in_img(), &mut seed);
    let w = rand_vec(g.weight_len(), &mut seed);
    let b = rand_vec(g.c_out, &mut seed);
    let in_pool = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| output(&g, Input::Dense(&x), &w, &b))
    };
    let (one, four) = (in_pool(1), in_pool(4));
    assert!(one
        .iter()
        .zip(&four)
        .all(|(u, v)| u.to_bits() == v.to_bits()));
}

#[test]
fn direct_shapes_are_3x3_same_convs_of_narrow_planes_with_outputs_in_fours() {
    let geom = |c_in, w, c_out, k, s, p| ConvGeom::new(2, c_in, 8, w, c_out, k, s, p).unwrap();
    if !has_avx512() {
        assert!(!applies(&geom(32, 14, 64, 3, 1, 1)));
        return;
    }
    assert!(applies(&geom(32, 14, 64, 3, 1, 1)) && applies(&geom(3, 1, 4, 3, 1, 1)));
    assert!(!applies(&geom(32, 15, 64, 3, 1, 1)), "a row is one vector");
    assert!(
        !applies(&geom(32, 14, 62, 3, 1, 1)),
        "output channels in fours"
    );
    assert!(!applies(&geom(32, 14, 64, 3, 2, 1)) && !applies(&geom(32, 14, 64, 1, 1, 0)));
    assert!(!applies(&geom(32, 14, 64, 3, 1, 0)) && !applies(&geom(32, 14, 64, 5, 1, 2)));
    assert!(preferred(&geom(32, 12, 64, 3, 1, 1)) && !preferred(&geom(32, 11, 64, 3, 1, 1)));
}
