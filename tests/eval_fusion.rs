//! Eval-time fusion (batch norm → repeat → LIF → max pool as one plane-wise kernel) gives the
//! same bits as running the layers one by one, on every built-in model, after training steps
//! have moved the batch-norm statistics, θ, τ and the MP-Init potentials off their initial
//! values; and the LIF statistics the CLI reports agree.

use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::lif::Lif;
use mpsnn::nn::{Encoding, ForwardCtx, Layer, Network};
use mpsnn::train::optim::{Optimizer, OptimizerConfig};
use mpsnn::Tensor;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 40) as f32 / (1u64 << 24) as f32
}

fn batch(input: [usize; 3], n: usize, seed: &mut u64) -> Tensor {
    let x: Vec<f32> = (0..n * input.iter().product::<usize>())
        .map(|_| lcg(seed) * 2.0)
        .collect();
    Tensor::from_vec(&[n, input[0], input[1], input[2]], x).unwrap()
}

fn lif_rates(net: &mut Network) -> Vec<(f64, f64)> {
    let mut rates = Vec::new();
    net.for_each_layer(&mut |l: &mut dyn Layer| {
        if let Some(lif) = l.as_any().downcast_ref::<Lif>() {
            let s = lif.stats();
            rates.push((s.firing_rate, s.active_fraction));
        }
    });
    rates
}

fn check(model: &str, input: [usize; 3], encoding: Encoding) {
    let mut opts = ModelOptions::new(input, 5);
    opts.encoding = encoding;
    opts.lif.theta0 = 0.5;
    let mut net = Network::new(build(model, &opts).unwrap(), 11).unwrap();
    let (t, b) = (3, 4);
    let frames = if encoding == Encoding::Direct { 1 } else { t };
    let mut seed = 5;
    let mut sgd = Optimizer::new(OptimizerConfig::paper_sgd());
    for step in 0..2 {
        let x = batch(input, frames * b, &mut seed);
        let y = net
            .forward(x, &ForwardCtx::train(t).with_step(step))
            .unwrap();
        let g = Tensor::full(y.shape(), 0.01);
        net.zero_grad();
        net.backward(g).unwrap();
        sgd.step(&mut net, 0.05);
    }
    let x = batch(input, frames * b, &mut seed);
    let mut run = |fused: bool| {
        net.set_eval_fusion(fused);
        let y = net.forward(x.clone(), &ForwardCtx::eval(t)).unwrap();
        let bits: Vec<u32> = y.data().iter().map(|v| v.to_bits()).collect();
        (bits, lif_rates(&mut net))
    };
    let (plain, plain_rates) = run(false);
    let (fused, fused_rates) = run(true);
    assert_eq!(fused, plain, "{model}: logits differ");
    assert_eq!(fused_rates, plain_rates, "{model}: LIF statistics differ");
    assert!(
        plain_rates.iter().any(|&(r, _)| r > 0.0),
        "{model}: nothing spiked, the comparison is vacuous"
    );
}

#[test]
fn fused_eval_equals_layer_by_layer_on_every_built_in_model() {
    check("mnist-cnn", [1, 28, 28], Encoding::Direct);
    check("vgg-small", [3, 16, 16], Encoding::Direct);
    check("resnet19", [3, 16, 16], Encoding::Direct);
    check("cnn7-dvs", [2, 16, 16], Encoding::Frames);
}
