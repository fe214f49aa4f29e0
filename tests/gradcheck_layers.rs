//! Finite-difference gradient checks for Conv2d, Linear, BatchNorm2d, MaxPool2d, AvgPool2d and
//! GlobalAvgPool2d: input gradient and every parameter gradient.
//!
//! Each check uses the scalar `L = Σ r·y` for a fixed random `r` (so `∂L/∂y = r`), computes
//! `L` in f64 from the f32 forward, and compares the layer's backward against the central
//! difference `(L(v + ε) − L(v − ε)) / 2ε` for every input and parameter element.
//!
//! Tolerance `|fd − analytic| ≤ 1e-4 + 1e-3·|analytic|`, with ε = 1e-2. Why: conv, linear and
//! the pools are (piecewise) linear, so the central difference has no truncation error; BN's
//! third derivative is O(1/σ³) with σ ≈ 0.6 and M ≥ 5 values per channel here, giving
//! truncation ~ε²/σ³/M ≲ 1e-4. The rest is f32 rounding of `y` (~6e-8 relative on |y| ≲ 5,
//! random signs over ≲ 500 outputs: ~1e-6 in `L`, ~5e-5 after dividing by 2ε). Measured worst
//! cases when this was written: BN input gradient 4.5e-5 (42 % of the bound), every other
//! gradient ≤ 4 % of it (conv/linear errors ~4e-6).
//! Max-pool inputs are spaced 0.05 apart (> 2ε) so no perturbation changes a window's argmax.

use mpsnn::nn::batchnorm::BatchNorm2d;
use mpsnn::nn::build::{init_rng, uniform, InitRng};
use mpsnn::nn::conv::Conv2d;
use mpsnn::nn::linear::Linear;
use mpsnn::nn::pool::{AvgPool2d, GlobalAvgPool2d, MaxPool2d};
use mpsnn::nn::spec::{BatchNorm2dSpec, Conv2dSpec, LinearSpec, PoolSpec};
use mpsnn::nn::{ForwardCtx, Layer};
use mpsnn::Tensor;

const EPS: f32 = 1e-2;

fn rand_tensor(rng: &mut InitRng, shape: &[usize], bound: f32) -> Tensor {
    Tensor::from_vec(shape, uniform(rng, shape.iter().product(), bound)).unwrap()
}

fn loss(layer: &mut dyn Layer, x: &Tensor, r: &Tensor) -> f64 {
    let y = layer.forward(x.clone(), &ForwardCtx::train(1)).unwrap();
    y.data()
        .iter()
        .zip(r.data())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

fn assert_close(what: &str, i: usize, fd: f64, an: f32) {
    let an = an as f64;
    assert!(
        (fd - an).abs() <= 1e-4 + 1e-3 * an.abs(),
        "{what}[{i}]: finite difference {fd}, backward {an}"
    );
}

/// Checks `∂L/∂x` and every trainable parameter's gradient of `layer` at `x`.
fn gradcheck(tag: &str, layer: &mut dyn Layer, x: Tensor, rng: &mut InitRng) {
    let out = layer.output_shape(x.shape()).unwrap();
    let r = rand_tensor(rng, &out, 1.0);
    layer.visit_params(&mut |p| p.grad.fill_zero());
    let y = layer.forward(x.clone(), &ForwardCtx::train(1)).unwrap();
    assert_eq!(
        y.shape(),
        &out[..],
        "{tag}: output_shape disagrees with forward"
    );
    let dx = layer.backward(r.clone()).unwrap();
    assert_eq!(dx.shape(), x.shape(), "{tag}: input gradient shape");

    let mut xp = x.clone();
    for i in 0..x.len() {
        let v = x.data()[i];
        xp.data_mut()[i] = v + EPS;
        let lp = loss(layer, &xp, &r);
        xp.data_mut()[i] = v - EPS;
        let lm = loss(layer, &xp, &r);
        xp.data_mut()[i] = v;
        assert_close(
            &format!("{tag} dx"),
            i,
            (lp - lm) / (2.0 * EPS as f64),
            dx.data()[i],
        );
    }

    let mut params = Vec::new();
    layer.visit_params(&mut |p| params.push((p.name.clone(), p.grad.clone())));
    assert!(
        !params.is_empty() || tag.contains("pool"),
        "{tag}: no parameters visited"
    );
    for (name, grad) in params {
        for i in 0..grad.len() {
            let set = |layer: &mut dyn Layer, delta: f32| {
                layer.visit_params(&mut |p| {
                    if p.name == name {
                        p.value.data_mut()[i] += delta;
                    }
                })
            };
            set(layer, EPS);
            let lp = loss(layer, &x, &r);
            set(layer, -2.0 * EPS);
            let lm = loss(layer, &x, &r);
            set(layer, EPS);
            assert_close(
                &format!("{tag} {name}"),
                i,
                (lp - lm) / (2.0 * EPS as f64),
                grad.data()[i],
            );
        }
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let mut rng = init_rng(1);
    // [n, c_in, h, w, c_out, k, stride, padding], bias
    let cases: &[([usize; 8], bool)] = &[
        ([2, 3, 7, 5, 4, 3, 1, 1], true),
        ([2, 2, 7, 5, 3, 3, 2, 1], false),
        ([3, 2, 6, 7, 2, 5, 2, 2], true),
        ([2, 3, 5, 5, 4, 1, 1, 0], true),
        ([2, 4, 6, 5, 3, 1, 2, 0], false),
        ([1, 1, 4, 4, 2, 3, 1, 0], true),
    ];
    for &([n, ci, h, w, co, k, s, p], bias) in cases {
        let spec = Conv2dSpec {
            name: "c".into(),
            in_channels: ci,
            out_channels: co,
            kernel: k,
            stride: s,
            padding: p,
            bias,
        };
        let mut layer = Conv2d::from_spec(&spec, &mut rng).unwrap();
        let x = rand_tensor(&mut rng, &[n, ci, h, w], 1.0);
        gradcheck(&format!("conv {spec:?}"), &mut layer, x, &mut rng);
    }
}

#[test]
fn linear_gradients_match_finite_differences() {
    let mut rng = init_rng(2);
    // A classifier head (`kernels::narrow`, ≤ 16 outputs), a few more (the transposed
    // product, split over the inputs) and many (over the outputs).
    for &(n, i, o, bias) in &[
        (3, 7, 5, true),
        (4, 9, 20, true),
        (1, 4, 3, false),
        (70, 3, 2, true),
        (3, 130, 4, true),
        (2, 3, 70, true),
    ] {
        let spec = LinearSpec {
            name: "fc".into(),
            in_features: i,
            out_features: o,
            bias,
        };
        let mut layer = Linear::from_spec(&spec, &mut rng).unwrap();
        let x = rand_tensor(&mut rng, &[n, i], 1.0);
        gradcheck(&format!("linear {spec:?}"), &mut layer, x, &mut rng);
    }
}

#[test]
fn batchnorm_gradients_match_finite_differences() {
    let mut rng = init_rng(3);
    for (shape, frozen) in [
        ([3, 4, 3, 5], false),
        ([2, 3, 7, 5], false),
        ([5, 2, 1, 1], false),
        ([2, 3, 4, 3], true),
    ] {
        let spec = BatchNorm2dSpec {
            name: "bn".into(),
            num_features: shape[1],
            eps: 1e-5,
            momentum: 0.1,
            training: None,
        };
        let mut layer = BatchNorm2d::from_spec(&spec).unwrap();
        // Non-trivial affine parameters and running statistics.
        layer.visit_params(&mut |p| {
            let v = uniform(&mut rng, p.value.len(), 0.5);
            for (d, s) in p.value.data_mut().iter_mut().zip(v) {
                *d += s;
            }
        });
        layer.visit_buffers(&mut |b| {
            let v = uniform(&mut rng, b.value.len(), 0.3);
            for (d, s) in b.value.data_mut().iter_mut().zip(v) {
                *d += s;
            }
        });
        layer.set_frozen_stats(frozen);
        let x = rand_tensor(&mut rng, &shape, 1.0);
        gradcheck(
            &format!("bn {shape:?} frozen={frozen}"),
            &mut layer,
            x,
            &mut rng,
        );
    }
}

/// A tie-free input: a random permutation of `0, 0.05, 0.1, …`, shifted to be centred.
fn distinct(rng: &mut InitRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let keys = uniform(rng, n, 1.0);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut data = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        data[i] = 0.05 * rank as f32 - 0.025 * n as f32;
    }
    Tensor::from_vec(shape, data).unwrap()
}

#[test]
fn pooling_gradients_match_finite_differences() {
    let mut rng = init_rng(4);
    // kernel, stride, padding, input shape
    let cases = [
        (2, 2, 0, [2, 3, 7, 5]),
        (3, 2, 1, [2, 2, 6, 7]),
        (3, 1, 1, [1, 2, 5, 4]),
        (3, 3, 0, [2, 1, 7, 8]),
    ];
    for (k, s, p, shape) in cases {
        let spec = PoolSpec {
            name: "pool".into(),
            kernel: k,
            stride: Some(s),
            padding: p,
        };
        let x = distinct(&mut rng, &shape);
        let mut max = MaxPool2d::from_spec(&spec).unwrap();
        gradcheck(&format!("maxpool {spec:?}"), &mut max, x, &mut rng);
        if p == 0 {
            let x = rand_tensor(&mut rng, &shape, 1.0);
            let mut avg = AvgPool2d::from_spec(&spec).unwrap();
            gradcheck(&format!("avgpool {spec:?}"), &mut avg, x, &mut rng);
        }
    }
    let x = rand_tensor(&mut rng, &[3, 2, 7, 5], 1.0);
    gradcheck(
        "global avgpool",
        &mut GlobalAvgPool2d::new("gap"),
        x,
        &mut rng,
    );
}

#[test]
fn maxpool_ties_send_the_gradient_to_the_first_maximum() {
    // θ-scaled spikes, as after a TrSG LIF layer: each 2×2 window has ties.
    let th = 1.5;
    #[rustfmt::skip]
    let x = Tensor::from_vec(&[1, 1, 4, 4], vec![
        0.0, th,  th,  th,
        th,  th,  th,  th,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, th,  0.0,
    ]).unwrap().with_spike_scale(Some(th));
    let spec = PoolSpec {
        name: "pool".into(),
        kernel: 2,
        stride: None,
        padding: 0,
    };
    let mut layer = MaxPool2d::from_spec(&spec).unwrap();
    let y = layer.forward(x, &ForwardCtx::train(2)).unwrap();
    assert_eq!(y.data(), &[th, th, 0.0, th]);
    assert_eq!(y.spike_scale(), Some(th));
    let g = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let dx = layer.backward(g).unwrap();
    #[rustfmt::skip]
    let want = [
        0.0, 1.0, 2.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        3.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 4.0, 0.0,
    ];
    assert_eq!(dx.data(), &want);
}

#[test]
fn spike_hint_is_kept_by_maxpool_only() {
    let x = Tensor::from_vec(&[1, 1, 2, 2], vec![0.0, 2.0, 2.0, 0.0])
        .unwrap()
        .with_spike_scale(Some(2.0));
    let ctx = ForwardCtx::eval(1);
    let pool = PoolSpec {
        name: "p".into(),
        kernel: 2,
        stride: None,
        padding: 0,
    };
    let y = MaxPool2d::from_spec(&pool)
        .unwrap()
        .forward(x.clone(), &ctx)
        .unwrap();
    assert_eq!(y.spike_scale(), Some(2.0));
    let y = AvgPool2d::from_spec(&pool)
        .unwrap()
        .forward(x.clone(), &ctx)
        .unwrap();
    assert_eq!(y.spike_scale(), None);
    let conv = Conv2dSpec {
        name: "c".into(),
        in_channels: 1,
        out_channels: 1,
        kernel: 1,
        stride: 1,
        padding: 0,
        bias: false,
    };
    let mut rng = init_rng(0);
    let y = Conv2d::from_spec(&conv, &mut rng)
        .unwrap()
        .forward(x.clone(), &ctx)
        .unwrap();
    assert_eq!(y.spike_scale(), None);
    let bn = BatchNorm2dSpec {
        name: "bn".into(),
        num_features: 1,
        eps: 1e-5,
        momentum: 0.1,
        training: None,
    };
    let y = BatchNorm2d::from_spec(&bn)
        .unwrap()
        .forward(x, &ctx)
        .unwrap();
    assert_eq!(y.spike_scale(), None);
}
