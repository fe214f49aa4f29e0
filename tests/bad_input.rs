//! Bad input to the stateless layers is a typed error, never a panic: shape mismatches name
//! both shapes, backward without a training forward is `NoForwardCache`, bad specs are `Spec`
//! or `Unsupported`, replaced parameters of the wrong shape are `State`.

use mpsnn::nn::batchnorm::BatchNorm2d;
use mpsnn::nn::build::init_rng;
use mpsnn::nn::conv::Conv2d;
use mpsnn::nn::linear::Linear;
use mpsnn::nn::pool::{AvgPool2d, GlobalAvgPool2d, MaxPool2d};
use mpsnn::nn::spec::{BatchNorm2dSpec, Conv2dSpec, LinearSpec, PoolSpec};
use mpsnn::nn::{ForwardCtx, Layer, ModelSpec, Network};
use mpsnn::{Error, Tensor};

fn conv_spec(name: &str, cin: usize, cout: usize, k: usize, pad: usize) -> Conv2dSpec {
    Conv2dSpec {
        name: name.into(),
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: 1,
        padding: pad,
        bias: true,
    }
}

fn pool_spec(k: usize, p: usize) -> PoolSpec {
    PoolSpec {
        name: "pool".into(),
        kernel: k,
        stride: None,
        padding: p,
    }
}

fn bn_spec(c: usize) -> BatchNorm2dSpec {
    BatchNorm2dSpec {
        name: "bn1".into(),
        num_features: c,
        eps: 1e-5,
        momentum: 0.1,
        training: None,
    }
}

fn every_layer() -> Vec<Box<dyn Layer>> {
    let mut rng = init_rng(0);
    let fc = LinearSpec {
        name: "fc".into(),
        in_features: 12,
        out_features: 3,
        bias: true,
    };
    vec![
        Box::new(Conv2d::from_spec(&conv_spec("conv1", 3, 4, 3, 1), &mut rng).unwrap()),
        Box::new(Linear::from_spec(&fc, &mut rng).unwrap()),
        Box::new(BatchNorm2d::from_spec(&bn_spec(3)).unwrap()),
        Box::new(MaxPool2d::from_spec(&pool_spec(2, 0)).unwrap()),
        Box::new(AvgPool2d::from_spec(&pool_spec(2, 0)).unwrap()),
        Box::new(GlobalAvgPool2d::new("gap")),
    ]
}

/// An input each layer of [`every_layer`] accepts.
fn good_input(layer: &dyn Layer) -> Tensor {
    if layer.name() == "fc" {
        Tensor::full(&[2, 12], 0.5)
    } else {
        Tensor::from_vec(&[2, 3, 4, 4], (0..96).map(|i| i as f32 * 0.1).collect()).unwrap()
    }
}

/// Asserts `r` is a shape mismatch whose message names both `expected` and `got`.
fn assert_mismatch<T: std::fmt::Debug>(r: mpsnn::Result<T>, expected: &str, got: &str) {
    match r {
        Err(e @ Error::ShapeMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(expected) && msg.contains(got),
                "message: {msg}"
            );
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
}

#[test]
fn wrong_input_shapes_name_both_shapes() {
    let mut rng = init_rng(0);
    let mut conv = Conv2d::from_spec(&conv_spec("conv1", 3, 8, 3, 0), &mut rng).unwrap();
    let ctx = ForwardCtx::train(1);
    let x = Tensor::zeros(&[8, 1, 28, 28]);
    assert_mismatch(
        conv.output_shape(x.shape()),
        "[N, 3, H, W]",
        "[8, 1, 28, 28]",
    );
    assert_mismatch(conv.forward(x, &ctx), "[N, 3, H, W]", "[8, 1, 28, 28]");
    assert_mismatch(
        conv.forward(Tensor::zeros(&[3, 28, 28]), &ctx),
        "[N, 3, H, W]",
        "[3, 28, 28]",
    );
    // A kernel larger than the padded input.
    assert_mismatch(
        conv.forward(Tensor::zeros(&[1, 3, 2, 9]), &ctx),
        "H + 2·0 >= 3",
        "[1, 3, 2, 9]",
    );

    let mut big = Conv2d::from_spec(&conv_spec("conv5", 1, 1, 5, 1), &mut rng).unwrap();
    assert!(big.forward(Tensor::zeros(&[1, 1, 3, 3]), &ctx).is_ok());
    assert_mismatch(
        big.forward(Tensor::zeros(&[1, 1, 2, 3]), &ctx),
        "H + 2·1 >= 5",
        "[1, 1, 2, 3]",
    );

    let fc = LinearSpec {
        name: "fc".into(),
        in_features: 10,
        out_features: 2,
        bias: false,
    };
    let mut fc = Linear::from_spec(&fc, &mut rng).unwrap();
    assert_mismatch(
        fc.forward(Tensor::zeros(&[4, 9]), &ctx),
        "[N, 10]",
        "[4, 9]",
    );
    assert_mismatch(
        fc.forward(Tensor::zeros(&[4, 10, 1]), &ctx),
        "[N, 10]",
        "[4, 10, 1]",
    );

    let mut bn = BatchNorm2d::from_spec(&bn_spec(4)).unwrap();
    assert_mismatch(
        bn.forward(Tensor::zeros(&[2, 5, 3, 3]), &ctx),
        "[N, 4, H, W]",
        "[2, 5, 3, 3]",
    );
    // One value per channel: no batch variance in training (PyTorch refuses it too).
    assert_mismatch(
        bn.forward(Tensor::zeros(&[1, 4, 1, 1]), &ctx),
        "more than one value",
        "[1, 4, 1, 1]",
    );
    assert!(bn
        .forward(Tensor::zeros(&[1, 4, 1, 1]), &ForwardCtx::eval(1))
        .is_ok());

    let mut mp = MaxPool2d::from_spec(&pool_spec(3, 1)).unwrap();
    assert_mismatch(
        mp.forward(Tensor::zeros(&[2, 3, 0, 4]), &ctx),
        "[N, C, H, W]",
        "[2, 3, 0, 4]",
    );
    let mut ap = AvgPool2d::from_spec(&pool_spec(3, 0)).unwrap();
    assert_mismatch(
        ap.forward(Tensor::zeros(&[2, 3, 2, 4]), &ctx),
        "H + 2·0 >= 3",
        "[2, 3, 2, 4]",
    );
    let mut gap = GlobalAvgPool2d::new("gap");
    assert_mismatch(
        gap.forward(Tensor::zeros(&[2, 3]), &ctx),
        "[N, C, H, W]",
        "[2, 3]",
    );
}

#[test]
fn mismatched_layers_in_a_model_name_both_shapes() {
    let spec: ModelSpec = serde_json::from_str(
        r#"{"name": "bad", "input": [1, 8, 8], "classes": 2, "layers": [
            {"type": "conv2d", "name": "conv1", "in_channels": 1, "out_channels": 4, "kernel": 3, "padding": 1},
            {"type": "batchnorm2d", "name": "bn1", "num_features": 5},
            {"type": "flatten", "name": "flat"},
            {"type": "linear", "name": "fc", "in_features": 256, "out_features": 2}]}"#,
    )
    .unwrap();
    match Network::new(spec, 0) {
        Err(e @ Error::ShapeMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("bn1") && msg.contains("[N, 5, H, W]") && msg.contains("[1, 4, 8, 8]"),
                "{msg}"
            );
        }
        Err(e) => panic!("expected a shape mismatch, got {e}"),
        Ok(_) => panic!("expected a shape mismatch, got a network"),
    }
}

#[test]
fn backward_without_training_forward_is_no_forward_cache() {
    for mut layer in every_layer() {
        let name = layer.name().to_string();
        let x = good_input(layer.as_ref());
        let g = Tensor::zeros(&layer.output_shape(x.shape()).unwrap());
        // Never run.
        assert!(
            matches!(layer.backward(g.clone()), Err(Error::NoForwardCache { .. })),
            "{name}"
        );
        // After an eval forward (which caches nothing).
        layer.forward(x.clone(), &ForwardCtx::eval(1)).unwrap();
        assert!(
            matches!(layer.backward(g.clone()), Err(Error::NoForwardCache { .. })),
            "{name}"
        );
        // A wrong gradient shape keeps the cache; the right one consumes it.
        layer.forward(x, &ForwardCtx::train(1)).unwrap();
        assert!(
            matches!(
                layer.backward(Tensor::zeros(&[7])),
                Err(Error::ShapeMismatch { .. })
            ),
            "{name}"
        );
        assert!(layer.backward(g.clone()).is_ok(), "{name}");
        assert!(
            matches!(layer.backward(g.clone()), Err(Error::NoForwardCache { .. })),
            "{name}"
        );
        // clear_cache drops it too.
        layer
            .forward(good_input(layer.as_ref()), &ForwardCtx::train(1))
            .unwrap();
        layer.clear_cache();
        assert!(
            matches!(layer.backward(g), Err(Error::NoForwardCache { .. })),
            "{name}"
        );
    }
}

#[test]
fn invalid_specs_are_errors() {
    let mut rng = init_rng(0);
    assert!(matches!(
        Conv2d::from_spec(&conv_spec("c", 0, 4, 3, 1), &mut rng),
        Err(Error::Spec(_))
    ));
    assert!(matches!(
        Conv2d::from_spec(&conv_spec("c", 3, 4, 0, 1), &mut rng),
        Err(Error::Spec(_))
    ));
    let stride0 = Conv2dSpec {
        stride: 0,
        ..conv_spec("c", 3, 4, 3, 1)
    };
    assert!(matches!(
        Conv2d::from_spec(&stride0, &mut rng),
        Err(Error::Spec(_))
    ));
    let fc = LinearSpec {
        name: "fc".into(),
        in_features: 0,
        out_features: 3,
        bias: true,
    };
    assert!(matches!(
        Linear::from_spec(&fc, &mut rng),
        Err(Error::Spec(_))
    ));
    assert!(matches!(
        BatchNorm2d::from_spec(&bn_spec(0)),
        Err(Error::Spec(_))
    ));
    let neg_eps = BatchNorm2dSpec {
        eps: -1.0,
        ..bn_spec(3)
    };
    assert!(matches!(
        BatchNorm2d::from_spec(&neg_eps),
        Err(Error::Spec(_))
    ));
    assert!(matches!(
        MaxPool2d::from_spec(&pool_spec(3, 2)),
        Err(Error::Spec(_))
    ));
    assert!(matches!(
        MaxPool2d::from_spec(&pool_spec(0, 0)),
        Err(Error::Spec(_))
    ));
    assert!(MaxPool2d::from_spec(&pool_spec(3, 1)).is_ok());
    assert!(matches!(
        AvgPool2d::from_spec(&pool_spec(3, 1)),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn replaced_parameters_of_the_wrong_shape_are_state_errors() {
    for mut layer in every_layer() {
        let mut has_params = false;
        layer.visit_params(&mut |p| {
            has_params = true;
            p.value = Tensor::zeros(&[p.value.len() + 1]);
        });
        if !has_params {
            continue;
        }
        let x = good_input(layer.as_ref());
        let r = layer.forward(x, &ForwardCtx::train(1));
        assert!(matches!(r, Err(Error::State(_))), "{}: {r:?}", layer.name());
    }
}

#[test]
fn empty_batches_pass_through_every_layer() {
    for mut layer in every_layer() {
        let name = layer.name().to_string();
        let mut shape = good_input(layer.as_ref()).shape().to_vec();
        shape[0] = 0;
        let out = layer.output_shape(&shape).unwrap();
        if name == "bn1" {
            // No statistics without values: a training forward is an error, eval is fine.
            let r = layer.forward(Tensor::zeros(&shape), &ForwardCtx::train(1));
            assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{name}");
            let y = layer
                .forward(Tensor::zeros(&shape), &ForwardCtx::eval(1))
                .unwrap();
            assert_eq!(y.shape(), &out[..]);
            continue;
        }
        let y = layer
            .forward(Tensor::zeros(&shape), &ForwardCtx::train(1))
            .unwrap();
        assert_eq!(y.shape(), &out[..], "{name}");
        let dx = layer.backward(y).unwrap();
        assert_eq!(dx.shape(), &shape[..], "{name}");
    }
}
