//! Optimizers (PyTorch semantics) and the learning-rate schedule.
//!
//! State is kept per parameter *name*, so it survives checkpoints and is independent of layer
//! order. Frozen parameters (`trainable == false`) are skipped entirely (no weight decay either).

use crate::error::{Error, Result};
use crate::kernels::elementwise::PAR_CHUNK;
use crate::nn::{Network, Param, StateDict};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Optimizer choice and hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OptimizerConfig {
    /// SGD with (non-Nesterov) momentum and L2 weight decay added to the gradient
    /// (`torch.optim.SGD`): `v ← m·v + (g + wd·p)`, `p ← p − lr·v`.
    Sgd {
        /// Momentum factor (the paper: 0.9).
        momentum: f32,
        /// Weight decay (the paper: 5e-4, on every parameter).
        weight_decay: f32,
    },
    /// AdamW (`torch.optim.AdamW`) with decoupled weight decay.
    AdamW {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// Decoupled weight decay.
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// The paper's SGD: momentum 0.9, weight decay 5e-4.
    pub fn paper_sgd() -> Self {
        OptimizerConfig::Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }

    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, weight decay 0.01).
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// An optimizer with its per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    steps: u64,
    /// SGD: momentum buffer; AdamW: first moment.
    first: BTreeMap<String, Vec<f32>>,
    /// AdamW: second moment.
    second: BTreeMap<String, Vec<f32>>,
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            steps: 0,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Applies one update with learning rate `lr` to every trainable parameter of `net`.
    pub fn step(&mut self, net: &mut Network, lr: f32) {
        self.steps += 1;
        let t = self.steps;
        let config = self.config;
        let (first, second) = (&mut self.first, &mut self.second);
        net.visit_params(&mut |p: &mut Param| {
            if !p.trainable {
                return;
            }
            let n = p.value.len();
            let m = first.entry(p.name.clone()).or_insert_with(|| vec![0.0; n]);
            let value = p.value.data_mut();
            let grad = p.grad.data();
            // Element-wise over fixed chunks on all threads: the same bits for any thread
            // count, and a ResNet-19 update (13 M parameters, five streams each) no longer
            // runs on one core while the other idles.
            match config {
                OptimizerConfig::Sgd {
                    momentum,
                    weight_decay,
                } => {
                    value
                        .par_chunks_mut(PAR_CHUNK)
                        .zip(grad.par_chunks(PAR_CHUNK))
                        .zip(m.par_chunks_mut(PAR_CHUNK))
                        .for_each(|((value, grad), m)| {
                            for ((w, &g), v) in value.iter_mut().zip(grad).zip(m.iter_mut()) {
                                *v = momentum * *v + (g + weight_decay * *w);
                                *w -= lr * *v;
                            }
                        });
                }
                OptimizerConfig::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let s = second.entry(p.name.clone()).or_insert_with(|| vec![0.0; n]);
                    let c1 = 1.0 - (beta1 as f64).powi(t as i32);
                    let c2 = 1.0 - (beta2 as f64).powi(t as i32);
                    let step = (lr as f64 / c1) as f32;
                    let c2_sqrt = c2.sqrt() as f32;
                    value
                        .par_chunks_mut(PAR_CHUNK)
                        .zip(grad.par_chunks(PAR_CHUNK))
                        .zip(m.par_chunks_mut(PAR_CHUNK))
                        .zip(s.par_chunks_mut(PAR_CHUNK))
                        .for_each(|(((value, grad), m), s)| {
                            for (((w, &g), m1), m2) in value
                                .iter_mut()
                                .zip(grad)
                                .zip(m.iter_mut())
                                .zip(s.iter_mut())
                            {
                                *w -= lr * weight_decay * *w;
                                *m1 = beta1 * *m1 + (1.0 - beta1) * g;
                                *m2 = beta2 * *m2 + (1.0 - beta2) * g * g;
                                *w -= step * *m1 / (m2.sqrt() / c2_sqrt + eps);
                            }
                        });
                }
            }
        });
    }

    /// The optimizer state as named tensors (`optim.first.<param>`, `optim.second.<param>`,
    /// `optim.steps`), for checkpoints.
    pub fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for (prefix, map) in [
            ("optim.first.", &self.first),
            ("optim.second.", &self.second),
        ] {
            for (name, v) in map {
                let t = Tensor::from_vec(&[v.len()], v.clone()).expect("1-D shape matches length");
                sd.insert(format!("{prefix}{name}"), t);
            }
        }
        // Stored as two exact f32 halves: f32 holds integers only up to 2^24.
        let lo = (self.steps & 0xFFFF) as f32;
        let hi = (self.steps >> 16) as f32;
        sd.insert(
            "optim.steps".into(),
            Tensor::from_vec(&[2], vec![lo, hi]).expect("2 values"),
        );
        sd
    }

    /// Restores state written by [`Optimizer::state_dict`].
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let steps = sd
            .get("optim.steps")
            .filter(|t| t.len() == 2)
            .ok_or_else(|| Error::State("optimizer state lacks optim.steps".into()))?;
        let (lo, hi) = (steps.data()[0], steps.data()[1]);
        self.steps = lo as u64 | ((hi as u64) << 16);
        self.first.clear();
        self.second.clear();
        for (name, t) in sd {
            if let Some(p) = name.strip_prefix("optim.first.") {
                self.first.insert(p.to_string(), t.data().to_vec());
            } else if let Some(p) = name.strip_prefix("optim.second.") {
                self.second.insert(p.to_string(), t.data().to_vec());
            }
        }
        Ok(())
    }
}

/// Cosine annealing to 0 stepped once per epoch (`CosineAnnealingLR(T_max = epochs)`):
/// epoch `e` (0-based) trains with `lr0·(1 + cos(π·e/epochs))/2`.
pub fn cosine_lr(lr0: f32, epoch: usize, epochs: usize) -> f32 {
    if epochs == 0 {
        return lr0;
    }
    let phase = std::f64::consts::PI * epoch as f64 / epochs as f64;
    (lr0 as f64 * (1.0 + phase.cos()) / 2.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ModelSpec;

    fn tiny_net() -> Network {
        let spec: ModelSpec = serde_json::from_str(
            r#"{"name": "t", "input": [1, 1, 2], "classes": 2, "encoding": "frames",
                "layers": [{"type": "flatten", "name": "f"},
                           {"type": "linear", "name": "fc", "in_features": 2, "out_features": 2}]}"#,
        )
        .unwrap();
        Network::new(spec, 1).unwrap()
    }

    #[test]
    fn cosine_schedule_endpoints() {
        assert_eq!(cosine_lr(0.02, 0, 10), 0.02);
        assert!((cosine_lr(0.02, 5, 10) - 0.01).abs() < 1e-9);
        assert!(cosine_lr(0.02, 10, 10).abs() < 1e-9);
    }

    #[test]
    fn sgd_matches_pytorch_update_by_hand() {
        let mut net = tiny_net();
        let before = net.state_dict();
        net.visit_params(&mut |p| p.grad.data_mut().fill(1.0));
        let mut opt = Optimizer::new(OptimizerConfig::Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
        });
        opt.step(&mut net, 0.5);
        opt.step(&mut net, 0.5);
        let after = net.state_dict();
        let w0 = before["fc.weight"].data()[0];
        // Step 1: v1 = 1 + 0.1·w0, w1 = w0 − 0.5·v1. Step 2: v2 = 0.9·v1 + 1 + 0.1·w1.
        let v1 = 1.0 + 0.1 * w0;
        let w1 = w0 - 0.5 * v1;
        let v2 = 0.9 * v1 + 1.0 + 0.1 * w1;
        let w2 = w1 - 0.5 * v2;
        assert!((after["fc.weight"].data()[0] - w2).abs() < 1e-6);
    }

    #[test]
    fn frozen_parameters_do_not_move_and_state_round_trips() {
        let mut net = tiny_net();
        net.visit_params(&mut |p| {
            p.grad.data_mut().fill(1.0);
            if p.name == "fc.bias" {
                p.trainable = false;
            }
        });
        let before = net.state_dict();
        let mut opt = Optimizer::new(OptimizerConfig::adamw());
        opt.step(&mut net, 0.1);
        let after = net.state_dict();
        assert_eq!(before["fc.bias"], after["fc.bias"]);
        assert_ne!(before["fc.weight"], after["fc.weight"]);

        let mut restored = Optimizer::new(OptimizerConfig::adamw());
        restored.load_state_dict(&opt.state_dict()).unwrap();
        assert_eq!(restored.steps(), 1);
        assert_eq!(restored.state_dict(), opt.state_dict());
    }
}
