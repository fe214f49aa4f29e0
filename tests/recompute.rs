//! Memory-saving paths give bit-identical results to the plain ones:
//! - LIF layers that rebuild their input in backward (after batch norm, and after a residual
//!   block with an identity or a conv+BN shortcut) against LIF layers that keep their tape;
//! - conv layers that cache spike inputs bit-packed (and use the event-driven kernels) are
//!   covered against the dense kernels in `kernels::conv::sparse`'s tests.

use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::{ForwardCtx, Network};
use mpsnn::Tensor;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 40) as f32 / (1u64 << 24) as f32
}

/// Two training steps' worth of forward + backward; returns logits, every parameter gradient
/// and every buffer, in order.
fn run(recompute: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut opts = ModelOptions::new([3, 8, 8], 5);
    opts.lif.theta0 = 0.6; // fire often enough that every path carries gradient
    let spec = build("resnet19", &opts).unwrap();
    let mut net = Network::new(spec, 3).unwrap();
    net.set_recompute(recompute);
    let (t, b) = (2, 3);
    let mut seed = 17;
    let mut logits = Vec::new();
    for step in 0..2 {
        let x: Vec<f32> = (0..b * 3 * 64).map(|_| lcg(&mut seed) * 3.0).collect();
        let x = Tensor::from_vec(&[b, 3, 8, 8], x).unwrap();
        let ctx = ForwardCtx::train(t).with_step(step);
        let y = net.forward(x, &ctx).unwrap();
        let g: Vec<f32> = (0..y.len()).map(|_| lcg(&mut seed) - 0.5).collect();
        logits.extend_from_slice(y.data());
        net.backward(Tensor::from_vec(y.shape(), g).unwrap())
            .unwrap();
    }
    let mut state = Vec::new();
    net.visit_params(&mut |p| state.push(p.grad.data().to_vec()));
    net.visit_buffers(&mut |b| state.push(b.value.data().to_vec()));
    (logits, state)
}

#[test]
fn recomputed_lif_inputs_give_bit_identical_gradients() {
    let (y_a, s_a) = run(true);
    let (y_b, s_b) = run(false);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y_a), bits(&y_b));
    assert_eq!(s_a.len(), s_b.len());
    let mut nonzero = 0;
    for (a, b) in s_a.iter().zip(&s_b) {
        assert_eq!(bits(a), bits(b));
        nonzero += a.iter().any(|&v| v != 0.0) as usize;
    }
    // Not a vacuous comparison: most parameters received a gradient.
    assert!(nonzero > s_a.len() / 2, "{nonzero} of {}", s_a.len());
}
