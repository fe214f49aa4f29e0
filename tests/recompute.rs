//! Memory-saving paths give bit-identical results to the plain ones:
//! - LIF layers that rebuild their input in backward (after batch norm, and after a residual
//!   block with an identity or a conv+BN shortcut) against LIF layers that keep their tape;
//! - batch norms after a spike-input conv (all, or only after 1×1 convs) that keep no input (the conv reruns on its bit-packed
//!   spikes in backward), in plain chains and in residual bodies and shortcuts, on both the
//!   event-driven and the dense conv path;
//! - conv layers that cache spike inputs bit-packed (and use the event-driven kernels) are
//!   covered against the dense kernels in `kernels::conv::sparse`'s tests.

use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::batchnorm::BatchNorm2d;
use mpsnn::nn::conv::Conv2d;
use mpsnn::nn::sequential::Recompute;
use mpsnn::nn::{ForwardCtx, Layer, Network};
use mpsnn::Tensor;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 40) as f32 / (1u64 << 24) as f32
}

/// What one configuration produced: logits of every step, then every parameter gradient and
/// value and every buffer after the last step; plus what the run exercised.
struct Outcome {
    logits: Vec<f32>,
    state: Vec<Vec<f32>>,
    /// Batch norms whose input was deferred after the first forward.
    deferred_bn: Vec<String>,
    /// Input density and event-path switch density of the convs fed with spikes (first step).
    densities: Vec<(f64, f64)>,
}

/// Three training steps (forward, backward, plain SGD update) of `model` at `level`.
fn run(model: &str, input: [usize; 3], theta0: f32, level: Recompute) -> Outcome {
    let mut opts = ModelOptions::new(input, 5);
    opts.lif.theta0 = theta0;
    let spec = build(model, &opts).unwrap();
    let mut net = Network::new(spec, 3).unwrap();
    net.set_recompute_level(level);
    let (t, b) = (2, 3);
    let mut seed = 17;
    let mut logits = Vec::new();
    let (mut deferred_bn, mut densities) = (Vec::new(), Vec::new());
    for step in 0..3 {
        let n = b * input.iter().product::<usize>();
        let x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 3.0).collect();
        let mut shape = vec![b];
        shape.extend_from_slice(&input);
        let x = Tensor::from_vec(&shape, x).unwrap();
        let ctx = ForwardCtx::train(t).with_step(step);
        let y = net.forward(x, &ctx).unwrap();
        if step == 0 {
            net.for_each_layer(&mut |l: &mut dyn Layer| {
                if l.as_any().is::<BatchNorm2d>() && l.input_deferred() {
                    deferred_bn.push(l.name().to_string());
                }
                if let Some(conv) = l.as_any().downcast_ref::<Conv2d>() {
                    if let (Some(d), Some(max)) =
                        (conv.last_input_density(), conv.last_switch_density())
                    {
                        densities.push((d, max));
                    }
                }
            });
        }
        let g: Vec<f32> = (0..y.len()).map(|_| lcg(&mut seed) - 0.5).collect();
        logits.extend_from_slice(y.data());
        net.zero_grad();
        net.backward(Tensor::from_vec(y.shape(), g).unwrap())
            .unwrap();
        net.visit_params(&mut |p| {
            for (v, &g) in p.value.data_mut().iter_mut().zip(p.grad.data()) {
                *v -= 0.05 * g;
            }
        });
    }
    let mut state = Vec::new();
    net.visit_params(&mut |p| {
        state.push(p.grad.data().to_vec());
        state.push(p.value.data().to_vec());
    });
    net.visit_buffers(&mut |b| state.push(b.value.data().to_vec()));
    Outcome {
        logits,
        state,
        deferred_bn,
        densities,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `model` at every level and checks that all agree bit for bit; returns the full run.
fn all_levels_agree(model: &str, input: [usize; 3], theta0: f32) -> Outcome {
    let full = run(model, input, theta0, Recompute::Full);
    for level in [Recompute::Pointwise, Recompute::Lif, Recompute::Off] {
        let other = run(model, input, theta0, level);
        // Below `Full`, only the shortcut BNs (after 1×1 convs) defer, and only at `Pointwise`.
        let expect = |n: &&String| level == Recompute::Pointwise && n.ends_with("_sc_bn");
        let want: Vec<_> = full.deferred_bn.iter().filter(expect).collect();
        let got: Vec<_> = other.deferred_bn.iter().collect();
        assert_eq!(got, want, "{model} {level:?}");
        assert_eq!(bits(&full.logits), bits(&other.logits), "{model} {level:?}");
        assert_eq!(full.state.len(), other.state.len());
        for (i, (a, b)) in full.state.iter().zip(&other.state).enumerate() {
            assert_eq!(bits(a), bits(b), "{model} {level:?}: state entry {i}");
        }
    }
    // Not a vacuous comparison: most gradients (every other entry of the parameter part) are
    // nonzero.
    let nonzero = full
        .state
        .iter()
        .filter(|v| v.iter().any(|&x| x != 0.0))
        .count();
    assert!(
        nonzero > full.state.len() / 2,
        "{nonzero} of {}",
        full.state.len()
    );
    full
}

#[test]
fn residual_net_recompute_is_bit_identical() {
    // Fires often: 3×3 convs (switch density > 0.4) as well as 1×1 shortcuts take the dense path.
    let out = all_levels_agree("resnet19", [3, 8, 8], 0.02);
    let dense_3x3 = out
        .densities
        .iter()
        .filter(|&&(d, max)| max > 0.4 && d > max)
        .count();
    assert!(dense_3x3 > 0, "{:?}", out.densities);
    // Every BN after a spike conv deferred its input: body BNs of identity and downsampling
    // blocks and the shortcut BNs; the stem BN (image input) did not.
    assert!(out.deferred_bn.iter().any(|n| n.ends_with("_sc_bn")));
    assert!(out.deferred_bn.iter().any(|n| n.ends_with("_1_bn")));
    assert!(out.deferred_bn.iter().any(|n| n.ends_with("_2_bn")));
    assert!(!out.deferred_bn.iter().any(|n| n.starts_with("stem")));
    assert_eq!(out.deferred_bn.len(), out.densities.len());
}

#[test]
fn residual_net_recompute_on_sparse_path_is_bit_identical() {
    // Fires rarely: the convs take the event-driven path.
    let out = all_levels_agree("resnet19", [3, 8, 8], 1.0);
    let sparse = out.densities.iter().filter(|&&(d, max)| d <= max).count();
    assert!(sparse > 0, "{:?}", out.densities);
    assert!(!out.deferred_bn.is_empty());
}

#[test]
fn plain_chains_recompute_is_bit_identical() {
    for (model, input) in [("mnist-cnn", [1, 12, 12]), ("vgg-small", [3, 8, 8])] {
        for theta0 in [0.6, 1.0] {
            let out = all_levels_agree(model, input, theta0);
            assert!(!out.deferred_bn.is_empty(), "{model}");
            assert_eq!(out.deferred_bn.len(), out.densities.len(), "{model}");
        }
    }
}
