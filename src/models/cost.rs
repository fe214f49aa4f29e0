//! Dense-equivalent cost of a model: conv/linear multiply-accumulates, counted the way the
//! PyTorch reference (`../shared/ref/torch_snn_bench.py`, `FlopCounterMode`) counts them, so
//! GFLOP/s figures are comparable.
//!
//! - FLOPs = 2·MACs; every conv/linear runs once per timestep (the reference repeats the image
//!   before the stem, so a `repeat` layer does not reduce the count).
//! - Training = forward + backward as run: each conv/linear's weight gradient costs one forward,
//!   its input gradient another, except the first layer, whose input needs no gradient.

use crate::nn::spec::{LayerSpec, ModelSpec};

/// Forward and training FLOPs per sample for `timesteps` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Forward FLOPs per sample.
    pub forward_flops: f64,
    /// Forward + backward FLOPs per sample.
    pub train_flops: f64,
}

/// The cost of `spec` at `timesteps` steps.
pub fn cost(spec: &ModelSpec, timesteps: usize) -> Cost {
    let mut shape = [spec.input[0], spec.input[1], spec.input[2]];
    let mut macs = Vec::new();
    walk(&spec.layers, &mut shape, &mut macs);
    let t = timesteps as f64;
    let forward: f64 = macs.iter().sum::<f64>() * 2.0 * t;
    let first = macs.first().copied().unwrap_or(0.0) * 2.0 * t;
    Cost {
        forward_flops: forward,
        train_flops: 3.0 * forward - first,
    }
}

/// Appends each conv/linear's MACs per sample and timestep, tracking `[C, H, W]`.
fn walk(layers: &[LayerSpec], shape: &mut [usize; 3], macs: &mut Vec<f64>) {
    for layer in layers {
        match layer {
            LayerSpec::Conv2d(c) => {
                let out = |x: usize| (x + 2 * c.padding).saturating_sub(c.kernel) / c.stride + 1;
                let (h, w) = (out(shape[1]), out(shape[2]));
                macs.push((c.out_channels * h * w * c.in_channels * c.kernel * c.kernel) as f64);
                *shape = [c.out_channels, h, w];
            }
            LayerSpec::Linear(l) => {
                macs.push((l.in_features * l.out_features) as f64);
                *shape = [l.out_features, 1, 1];
            }
            LayerSpec::Maxpool2d(p) | LayerSpec::Avgpool2d(p) => {
                let out = |x: usize| (x + 2 * p.padding).saturating_sub(p.kernel) / p.stride() + 1;
                *shape = [shape[0], out(shape[1]), out(shape[2])];
            }
            LayerSpec::GlobalAvgpool2d(_) => *shape = [shape[0], 1, 1],
            LayerSpec::Flatten(_) => *shape = [shape.iter().product(), 1, 1],
            LayerSpec::Residual(r) => {
                let mut side = *shape;
                walk(&r.shortcut, &mut side, macs);
                walk(&r.body, shape, macs);
            }
            LayerSpec::Batchnorm2d(_)
            | LayerSpec::Lif(_)
            | LayerSpec::Dropout(_)
            | LayerSpec::Repeat(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{build, ModelOptions};

    /// The reference's FlopCounterMode figures (`../shared/ref/REPORT.md`, T = 4):
    /// mnist_cnn 0.031 / 0.091, vgg_small 1.22 / 3.65, resnet19_paper 53.2 GFLOP (fwd+bwd).
    #[test]
    fn matches_the_pytorch_reference_counts() {
        let gf = |name: &str, input: [usize; 3]| {
            let c = cost(&build(name, &ModelOptions::new(input, 10)).unwrap(), 4);
            (c.forward_flops / 1e9, c.train_flops / 1e9)
        };
        let (f, t) = gf("mnist-cnn", [1, 28, 28]);
        assert!(
            (f - 0.031).abs() < 0.001 && (t - 0.091).abs() < 0.002,
            "{f} {t}"
        );
        let (f, t) = gf("vgg-small", [3, 32, 32]);
        assert!(
            (f - 1.22).abs() < 0.01 && (t - 3.65).abs() < 0.02,
            "{f} {t}"
        );
        let (_, t) = gf("resnet19", [3, 32, 32]);
        assert!((t - 53.2).abs() < 0.3, "{t}");
    }
}
