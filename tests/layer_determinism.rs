//! Every stateless layer gives bit-identical outputs, input gradients and parameter gradients
//! with 1 and 4 rayon threads (fixed reduction order, DESIGN.md determinism rule), on shapes
//! large enough that the kernels actually split work (grouped images, channel blocks, several
//! row blocks).

use mpsnn::nn::batchnorm::BatchNorm2d;
use mpsnn::nn::build::{init_rng, uniform};
use mpsnn::nn::conv::Conv2d;
use mpsnn::nn::linear::Linear;
use mpsnn::nn::pool::{AvgPool2d, GlobalAvgPool2d, MaxPool2d};
use mpsnn::nn::spec::{BatchNorm2dSpec, Conv2dSpec, LinearSpec, PoolSpec};
use mpsnn::nn::{ForwardCtx, Layer};
use mpsnn::Tensor;

/// Output, input gradient and every parameter gradient, as raw bits.
fn run(make: &(dyn Fn() -> Box<dyn Layer> + Sync), shape: &[usize], threads: usize) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut layer = make();
        let mut rng = init_rng(42);
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec(shape, uniform(&mut rng, n, 1.0)).unwrap();
        let y = layer.forward(x, &ForwardCtx::train(4)).unwrap();
        let g = Tensor::from_vec(y.shape(), uniform(&mut rng, y.len(), 1.0)).unwrap();
        let dx = layer.backward(g).unwrap();
        let mut bits: Vec<u32> = y
            .data()
            .iter()
            .chain(dx.data())
            .map(|v| v.to_bits())
            .collect();
        layer.visit_params(&mut |p| bits.extend(p.grad.data().iter().map(|v| v.to_bits())));
        bits
    })
}

fn check(name: &str, make: &(dyn Fn() -> Box<dyn Layer> + Sync), shape: &[usize]) {
    let (a, b) = (run(make, shape, 1), run(make, shape, 4));
    assert_eq!(a.len(), b.len(), "{name}");
    let diff = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        diff, 0,
        "{name}: {diff} values differ between 1 and 4 threads"
    );
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, padding: usize) -> Box<dyn Layer> {
    let spec = Conv2dSpec {
        name: "c".into(),
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride,
        padding,
        bias: true,
    };
    Box::new(Conv2d::from_spec(&spec, &mut init_rng(1)).unwrap())
}

#[test]
fn layers_are_bit_identical_across_thread_counts() {
    check(
        "conv 3x3 grouped",
        &|| conv(64, 16, 3, 1, 1),
        &[30, 64, 6, 6],
    );
    check("conv 3x3 blocks", &|| conv(80, 8, 3, 1, 1), &[5, 80, 9, 7]);
    check("conv 1x1 s2", &|| conv(16, 8, 1, 2, 0), &[9, 16, 10, 10]);
    check("conv 5x5 s2", &|| conv(3, 4, 5, 2, 2), &[6, 3, 24, 24]);
    let fc = LinearSpec {
        name: "fc".into(),
        in_features: 70,
        out_features: 90,
        bias: true,
    };
    check(
        "linear",
        &|| Box::new(Linear::from_spec(&fc, &mut init_rng(2)).unwrap()),
        &[200, 70],
    );
    let bn = BatchNorm2dSpec {
        name: "bn".into(),
        num_features: 6,
        eps: 1e-5,
        momentum: 0.1,
        training: None,
    };
    check(
        "batchnorm",
        &|| Box::new(BatchNorm2d::from_spec(&bn).unwrap()),
        &[16, 6, 30, 30],
    );
    let pool = PoolSpec {
        name: "p".into(),
        kernel: 3,
        stride: Some(2),
        padding: 1,
    };
    check(
        "maxpool",
        &|| Box::new(MaxPool2d::from_spec(&pool).unwrap()),
        &[16, 6, 31, 30],
    );
    let avg = PoolSpec {
        padding: 0,
        ..pool.clone()
    };
    check(
        "avgpool",
        &|| Box::new(AvgPool2d::from_spec(&avg).unwrap()),
        &[16, 6, 31, 30],
    );
    check(
        "global avgpool",
        &|| Box::new(GlobalAvgPool2d::new("g")),
        &[16, 6, 31, 30],
    );
}
