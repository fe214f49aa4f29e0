//! Tests of [`Conv2d`](super::Conv2d).

use super::*;
use crate::nn::build::init_rng;

fn negate_weight(conv: &mut Conv2d) {
    conv.visit_params(&mut |p| {
        if p.name.ends_with(".weight") {
            for v in p.value.data_mut() {
                *v *= -2.0;
            }
        }
    });
}

/// A 3×3 "same" conv from 32 channels.
fn spec_3x3_from_32(out_channels: usize, bias: bool) -> Conv2dSpec {
    Conv2dSpec {
        name: "c".into(),
        in_channels: 32,
        out_channels,
        kernel: 3,
        stride: 1,
        padding: 1,
        bias,
    }
}

/// A spike tensor of `shape` with values 0.5 where a seeded LCG's top nibble is below
/// `sixteenths` (about that many sixteenths of the elements), else 0.
fn spike_tensor(shape: &[usize], sixteenths: u32, mut seed: u32) -> Tensor {
    let x: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            if seed >> 28 < sixteenths {
                0.5
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(shape, x)
        .unwrap()
        .with_spike_scale(Some(0.5))
}

/// A training forward's output is rebuilt bit for bit from the cached bits on each side of
/// the switch point: the event path, and the dense one (Winograd F(4×4) at this shape
/// where AVX-512 is, which takes the f32 input in the forward and unpacked bits here).
#[test]
fn recompute_output_gives_the_forward_bits_on_both_paths() {
    let spec = spec_3x3_from_32(32, true);
    for (threshold, sparse_side) in [(1u32, true), (8, false)] {
        let x = spike_tensor(&[2, 32, 14, 14], threshold, 9);
        let mut conv = Conv2d::from_spec(&spec, &mut init_rng(5)).unwrap();
        let y = conv.forward(x, &ForwardCtx::train(1)).unwrap();
        let (density, max) = conv.last_density.unwrap();
        assert_eq!(
            density <= max,
            sparse_side,
            "density {density}, switch {max}"
        );
        let again = conv.recompute_output().unwrap();
        let same = y
            .data()
            .iter()
            .zip(again.data())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "density {density}: recomputed output differs");
    }
}

/// A training forward asked for its output planes' moments gives exactly
/// `bn::plane_moments` of each output plane — on the dense spike path, where the Winograd
/// forward runs — once, and only for that output; the event path, eval forwards and an
/// unasked conv give none.
#[test]
fn output_moments_are_those_of_the_output_planes_given_once() {
    let spec = spec_3x3_from_32(16, false);
    let mut conv = Conv2d::from_spec(&spec, &mut init_rng(3)).unwrap();
    let dense_spikes = spike_tensor(&[3, 32, 14, 14], 8, 4);
    let y = conv
        .forward(dense_spikes.clone(), &ForwardCtx::train(1))
        .unwrap();
    assert!(conv.take_output_moments(&y).is_none(), "not asked");
    conv.set_output_moments(true);
    let y = conv
        .forward(dense_spikes.clone(), &ForwardCtx::train(1))
        .unwrap();
    let other = conv
        .forward(dense_spikes.clone(), &ForwardCtx::train(1))
        .unwrap();
    assert!(conv.take_output_moments(&y).is_none(), "an earlier output");
    let y = conv
        .forward(dense_spikes.clone(), &ForwardCtx::train(1))
        .unwrap();
    if winograd::f43::preferred(&conv.geom(dense_spikes.shape()).unwrap()) {
        let moments = conv.take_output_moments(&y).expect("moments").to_vec();
        assert_eq!(moments.len(), 3 * 16);
        for (plane, m) in y.data().chunks_exact(14 * 14).zip(&moments) {
            let want = crate::kernels::bn::plane_moments(plane);
            assert_eq!(
                (want.mean.to_bits(), want.m2.to_bits()),
                (m.mean.to_bits(), m.m2.to_bits())
            );
        }
    }
    assert!(conv.take_output_moments(&y).is_none(), "given twice");
    drop(other);
    let sparse = conv.forward(spike_tensor(&[3, 32, 14, 14], 1, 4), &ForwardCtx::train(1));
    assert!(
        conv.take_output_moments(&sparse.unwrap()).is_none(),
        "event path"
    );
    let eval = conv.forward(dense_spikes, &ForwardCtx::eval(1)).unwrap();
    assert!(conv.take_output_moments(&eval).is_none(), "eval");
}

/// A one-channel stem takes its output planes' moments too (the flat-tap forward), the bits
/// of the planes' own moments, given once.
#[test]
fn a_stem_gives_its_output_moments() {
    let spec = Conv2dSpec {
        in_channels: 1,
        bias: true,
        ..spec_3x3_from_32(8, true)
    };
    let mut conv = Conv2d::from_spec(&spec, &mut init_rng(5)).unwrap();
    let images = Tensor::from_vec(
        &[3, 1, 9, 11],
        (0..3 * 9 * 11).map(|k| (k % 7) as f32 * 0.25).collect(),
    )
    .unwrap();
    conv.set_output_moments(true);
    let y = conv.forward(images.clone(), &ForwardCtx::train(1)).unwrap();
    let moments = conv.take_output_moments(&y).expect("moments").to_vec();
    assert_eq!(moments.len(), 3 * 8);
    for (plane, m) in y.data().chunks_exact(9 * 11).zip(&moments) {
        assert_eq!(*m, crate::kernels::bn::plane_moments(plane));
    }
    assert!(conv.take_output_moments(&y).is_none(), "given twice");
    let eval = conv.forward(images, &ForwardCtx::eval(1)).unwrap();
    assert!(conv.take_output_moments(&eval).is_none(), "eval");
}

/// The packed weight kept between eval forwards is repacked after every change of the
/// weight, and a training forward does not keep it.
#[test]
fn a_kept_packed_weight_follows_weight_changes() {
    let spec = spec_3x3_from_32(16, true);
    let x = spike_tensor(&[2, 32, 6, 6], 2, 1);
    let eval = ForwardCtx::eval(1);
    let mut conv = Conv2d::from_spec(&spec, &mut init_rng(3)).unwrap();
    let first = conv.forward(x.clone(), &eval).unwrap();
    let (density, max) = conv.last_density.unwrap();
    assert!(density <= max, "the event-driven path must run");
    assert!(conv.packed.is_some());
    assert_eq!(conv.forward(x.clone(), &eval).unwrap(), first);

    negate_weight(&mut conv);
    let changed = conv.forward(x.clone(), &eval).unwrap();
    let mut fresh = Conv2d::from_spec(&spec, &mut init_rng(3)).unwrap();
    negate_weight(&mut fresh);
    assert_eq!(changed, fresh.forward(x.clone(), &eval).unwrap());
    assert_ne!(changed, first);

    conv.forward(x, &ForwardCtx::train(1)).unwrap();
    assert!(conv.packed.is_none());
}
