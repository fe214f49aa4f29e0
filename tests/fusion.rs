//! Fusion gives the same bits as running the layers one by one, on every built-in model:
//!
//! - eval (batch norm → repeat → LIF → max pool as one plane-wise kernel), after training
//!   steps have moved the batch-norm statistics, θ, τ and the MP-Init potentials off their
//!   initial values, with the LIF statistics the CLI reports;
//! - training (repeat → LIF → max pool as one forward and one backward kernel) over several
//!   SGD steps: logits, every parameter gradient, the MP-Init potentials and batch-norm
//!   statistics, the parameters after each update, and the LIF statistics.

use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::lif::Lif;
use mpsnn::nn::sequential::Recompute;
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

const VAR_SHRINK: f32 = 0.01;

fn check_eval(model: &str, input: [usize; 3], encoding: Encoding) {
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
    // Two steps leave the running variances near their initial 1, far above the variance of
    // a conv over sparse spikes: the deeper neurons would never fire and their fused paths
    // (the residual tail, the packed spikes) would go untested. Shrink them so every layer
    // fires.
    net.visit_buffers(&mut |buf| {
        if buf.name.ends_with("running_var") {
            for v in buf.value.data_mut() {
                *v *= VAR_SHRINK;
            }
        }
    });
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
    // Every neuron layer but possibly the last (cnn7-dvs' FC neuron) fires, or the comparison
    // would not reach the fused stages after it.
    let silent = plain_rates.iter().filter(|&&(r, _)| r == 0.0).count();
    assert!(
        silent <= 1,
        "{model}: {silent} LIF layers never fired, the comparison is vacuous: {plain_rates:?}"
    );
}

#[test]
fn fused_eval_equals_layer_by_layer_on_every_built_in_model() {
    check_eval("mnist-cnn", [1, 28, 28], Encoding::Direct);
    check_eval("vgg-small", [3, 16, 16], Encoding::Direct);
    check_eval("resnet19", [3, 16, 16], Encoding::Direct);
    check_eval("cnn7-dvs", [2, 16, 16], Encoding::Frames);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Everything a step leaves behind, as bits: logits, then per parameter its value and
/// gradient, per buffer its value, per LIF its statistics.
#[derive(Debug, PartialEq)]
struct Trace {
    logits: Vec<u32>,
    params: Vec<(String, Vec<u32>, Vec<u32>)>,
    buffers: Vec<(String, Vec<u32>)>,
    lif_stats: Vec<String>,
}

fn train_steps(
    model: &str,
    input: [usize; 3],
    encoding: Encoding,
    fused: bool,
    recompute: Recompute,
    stem_by_linearity: bool,
) -> (Vec<Trace>, usize) {
    let mut opts = ModelOptions::new(input, 5);
    opts.encoding = encoding;
    opts.lif.theta0 = 0.5;
    let mut net = Network::new(build(model, &opts).unwrap(), 11).unwrap();
    net.set_train_fusion(fused);
    net.set_stem_grad_by_linearity(stem_by_linearity);
    net.set_recompute_level(recompute);
    let (t, b) = (3, 4);
    let frames = if encoding == Encoding::Direct { 1 } else { t };
    let mut seed = 5;
    let mut sgd = Optimizer::new(OptimizerConfig::paper_sgd());
    let mut traces = Vec::new();
    let mut fused_layers = 0;
    for step in 0..3 {
        let x = batch(input, frames * b, &mut seed);
        let y = net
            .forward(x, &ForwardCtx::train(t).with_step(step))
            .unwrap();
        net.for_each_layer(&mut |l: &mut dyn Layer| {
            if l.as_any()
                .downcast_ref::<Lif>()
                .is_some_and(Lif::has_fused_cache)
            {
                fused_layers += 1;
            }
        });
        // A loss gradient that differs per logit, so every path matters.
        let g: Vec<f32> = (0..y.len()).map(|i| 0.01 * (i % 7) as f32 - 0.02).collect();
        net.zero_grad();
        net.backward(Tensor::from_vec(y.shape(), g).unwrap())
            .unwrap();
        let mut params = Vec::new();
        net.visit_params(&mut |p| {
            params.push((p.name.clone(), bits(p.value.data()), bits(p.grad.data())))
        });
        let mut buffers = Vec::new();
        net.visit_buffers(&mut |b| buffers.push((b.name.clone(), bits(b.value.data()))));
        let mut lif_stats = Vec::new();
        net.for_each_layer(&mut |l: &mut dyn Layer| {
            if let Some(lif) = l.as_any().downcast_ref::<Lif>() {
                lif_stats.push(format!("{:?}", lif.stats()));
            }
        });
        traces.push(Trace {
            logits: bits(y.data()),
            params,
            buffers,
            lif_stats,
        });
        sgd.step(&mut net, 0.05);
    }
    (traces, fused_layers)
}

fn check_training(model: &str, input: [usize; 3], encoding: Encoding, recompute: Recompute) {
    let (plain, none) = train_steps(model, input, encoding, false, recompute, false);
    let (fused, fused_layers) = train_steps(model, input, encoding, true, recompute, false);
    assert_eq!(none, 0, "{model}: fusion was off");
    assert!(
        fused_layers > 0,
        "{model}: nothing was fused, the comparison is vacuous"
    );
    for (step, (p, f)) in plain.iter().zip(&fused).enumerate() {
        assert_eq!(p.logits, f.logits, "{model} step {step}: logits");
        for (a, b) in p.params.iter().zip(&f.params) {
            assert_eq!(a, b, "{model} step {step}: parameter {}", a.0);
        }
        assert_eq!(p.buffers, f.buffers, "{model} step {step}: buffers");
        assert_eq!(
            p.lif_stats, f.lif_stats,
            "{model} step {step}: LIF statistics"
        );
    }
    assert!(
        plain[2]
            .lif_stats
            .iter()
            .any(|s| !s.contains("firing_rate: 0.0,")),
        "{model}: nothing spiked"
    );
}

#[test]
fn fused_training_equals_layer_by_layer_on_every_built_in_model() {
    let default = Recompute::Pointwise;
    check_training("mnist-cnn", [1, 28, 28], Encoding::Direct, default);
    check_training("vgg-small", [3, 16, 16], Encoding::Direct, default);
    check_training("resnet19", [3, 16, 16], Encoding::Direct, default);
    // The other recomputation levels change what the layers around a run keep.
    check_training("mnist-cnn", [1, 28, 28], Encoding::Direct, Recompute::Full);
    check_training("resnet19", [3, 16, 16], Encoding::Direct, Recompute::Off);
}

/// By default fused training takes `mnist-cnn`'s stem weight gradient by linearity: its first
/// step then has the bits of the exact fused step but for that gradient, which is within f32
/// rounding of it.
#[test]
fn the_stem_gradient_by_linearity_is_within_rounding_of_the_exact_one() {
    let run = |linear| {
        let (traces, fused) = train_steps(
            "mnist-cnn",
            [1, 28, 28],
            Encoding::Direct,
            true,
            Recompute::Pointwise,
            linear,
        );
        assert!(fused > 0);
        traces.into_iter().next().unwrap()
    };
    let (exact, linear) = (run(false), run(true));
    assert_eq!(exact.logits, linear.logits);
    assert_eq!(exact.buffers, linear.buffers);
    assert_eq!(exact.lif_stats, linear.lif_stats);
    let mut stem_seen = false;
    for ((name, value, grad), (_, value_l, grad_l)) in exact.params.iter().zip(&linear.params) {
        assert_eq!(value, value_l, "{name}");
        if name != "stem_conv.weight" {
            assert_eq!(grad, grad_l, "{name}");
            continue;
        }
        stem_seen = true;
        let f = |v: &[u32]| -> Vec<f32> { v.iter().map(|&b| f32::from_bits(b)).collect() };
        let (a, b) = (f(grad), f(grad_l));
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "the stem got no gradient");
        // Each entry sums 4·28·28 products per image; both routes round in f32.
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{name}[{k}]: {x} vs {y}");
        }
        assert!(a != b, "the same bits: the linear route did not run");
    }
    assert!(stem_seen, "no parameter stem_conv.weight");
}

/// `cnn7-dvs` has average pools and frame input (no repeat): there is nothing to fuse, and
/// training runs layer by layer.
#[test]
fn a_model_without_runs_trains_unfused() {
    let (_, fused_layers) = train_steps(
        "cnn7-dvs",
        [2, 16, 16],
        Encoding::Frames,
        true,
        Recompute::Pointwise,
        true,
    );
    assert_eq!(fused_layers, 0);
}
