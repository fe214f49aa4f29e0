//! The training loop: one step, one epoch, evaluation with per-timestep accuracy.
//!
//! The trainer sees batches as `(input, labels)` pairs and knows nothing of datasets or files;
//! [`crate::train::run`] connects it to data, checkpoints and metrics files.

use super::data_parallel::DataParallel;
use super::loss::{predict_upto, Loss};
use super::optim::{cosine_lr, Optimizer, OptimizerConfig};
use super::record::Recorder;
use crate::error::{Error, Result};
use crate::kernels::elementwise::par_all_finite;
use crate::nn::{ForwardCtx, Network};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// A batch as the trainer sees it: the network input and one label per sample.
pub type Batch = (Tensor, Vec<usize>);

/// Hyper-parameters of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Timesteps T.
    pub timesteps: usize,
    /// Total epochs (the cosine schedule reaches 0 after the last).
    pub epochs: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f32,
    /// Optimizer and its hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// Loss function.
    pub loss: Loss,
    /// Seed of everything random (initialization, data order, augmentation, dropout).
    pub seed: u64,
}

impl TrainConfig {
    /// The paper's recipe (METHOD.md §5): SGD momentum 0.9, wd 5e-4, lr 0.02, cosine, batch 64,
    /// mean-over-T cross-entropy.
    pub fn paper(timesteps: usize, epochs: usize) -> Self {
        TrainConfig {
            timesteps,
            epochs,
            batch_size: 64,
            lr: 0.02,
            optimizer: OptimizerConfig::paper_sgd(),
            loss: Loss::MeanCe,
            seed: 1234,
        }
    }

    /// Learning rate of epoch `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f32 {
        cosine_lr(self.lr, epoch, self.epochs)
    }
}

/// Result of one training step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Batch loss.
    pub loss: f32,
    /// Correctly classified samples (mean-over-T logits).
    pub correct: usize,
    /// Batch size.
    pub samples: usize,
}

/// Accumulated statistics of a training epoch.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TrainStats {
    /// Mean loss over batches, weighted by batch size.
    pub loss: f64,
    /// Training accuracy in [0, 1].
    pub accuracy: f64,
    /// Samples seen.
    pub samples: usize,
}

/// Evaluation result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    /// Accuracy of the mean-over-T logits, in [0, 1].
    pub accuracy: f64,
    /// Accuracy of the cumulative mean of the first `t` outputs, `t = 1..=T`.
    pub accuracy_per_timestep: Vec<f64>,
    /// Mean loss.
    pub loss: f64,
    /// Samples evaluated.
    pub n: usize,
}

/// Owns a network and its optimizer and runs steps and epochs.
pub struct Trainer {
    /// The model being trained.
    pub net: Network,
    /// Optimizer state.
    pub optimizer: Optimizer,
    /// Run configuration.
    pub config: TrainConfig,
    /// Diagnostics gathered during training steps, if any (see [`super::record`]).
    pub recorder: Option<Recorder>,
    /// Data-parallel training across ranks (`None`: this process alone). When set, `step`
    /// returns the statistics of the global batch.
    pub data_parallel: Option<DataParallel>,
}

impl Trainer {
    /// A trainer with a fresh optimizer.
    pub fn new(net: Network, config: TrainConfig) -> Self {
        Trainer {
            optimizer: Optimizer::new(config.optimizer),
            net,
            config,
            recorder: None,
            data_parallel: None,
        }
    }

    /// One step: forward (train mode), loss, backward, optimizer update with `lr`.
    ///
    /// A non-finite loss or parameter gradient returns [`Error::NonFinite`] (with `epoch` and
    /// `batch` for the message) before any parameter changes. Gradients are checked too because
    /// spiking layers squash NaN activations to silent neurons, so a NaN input or BN statistic
    /// can leave the loss finite while poisoning the gradients.
    pub fn step(
        &mut self,
        input: Tensor,
        labels: &[usize],
        lr: f32,
        epoch: usize,
        batch: usize,
    ) -> Result<StepStats> {
        let t = self.config.timesteps;
        self.net.zero_grad();
        if let Some(r) = &mut self.recorder {
            r.before_forward(&mut self.net, batch);
        }
        let share = self
            .data_parallel
            .as_mut()
            .map(|dp| dp.batch_share(labels.len()));
        let ctx = ForwardCtx::train(t)
            .with_step(self.optimizer.steps())
            .with_sample_offset(share.map_or(0, |s| s.offset));
        let logits = self.net.forward(input, &ctx)?;
        let out = self.config.loss.compute(&logits, labels, t)?;
        if !out.loss.is_finite() {
            if let Some(r) = &mut self.recorder {
                r.cancel_step(&mut self.net);
            }
            self.net.clear_cache();
            return Err(Error::NonFinite {
                what: format!("loss ({})", out.loss),
                epoch,
                batch,
            });
        }
        let predictions = predict_upto(&logits, labels.len(), t, t);
        let correct = predictions
            .iter()
            .zip(labels)
            .filter(|(p, y)| p == y)
            .count();
        let mut grad = out.grad;
        if let Some(scale) = share.map(|s| s.loss_scale).filter(|&s| s != 1.0) {
            grad.data_mut().iter_mut().for_each(|g| *g *= scale);
        }
        self.net.backward(grad)?;
        let mut stats = StepStats {
            loss: out.loss,
            correct,
            samples: labels.len(),
        };
        if let Some(dp) = &mut self.data_parallel {
            stats = dp.reduce_step(&mut self.net, stats);
        }
        let mut bad = None;
        self.net.visit_params(&mut |p| {
            if bad.is_none() && p.trainable && !par_all_finite(p.grad.data()) {
                bad = Some(p.name.clone());
            }
        });
        if let Some(name) = bad {
            if let Some(r) = &mut self.recorder {
                r.cancel_step(&mut self.net);
            }
            self.net.clear_cache();
            return Err(Error::NonFinite {
                what: format!("gradient of {name}"),
                epoch,
                batch,
            });
        }
        if let Some(r) = &mut self.recorder {
            r.after_backward(&mut self.net, &stats);
        }
        self.optimizer.step(&mut self.net, lr);
        Ok(stats)
    }

    /// Trains one epoch (`epoch` is 0-based) over `batches`, calling `on_step` after each step.
    pub fn train_epoch(
        &mut self,
        epoch: usize,
        batches: impl Iterator<Item = Result<Batch>>,
        on_step: &mut dyn FnMut(usize, &StepStats),
    ) -> Result<TrainStats> {
        let lr = self.config.lr_at(epoch);
        let (mut loss_sum, mut correct, mut samples) = (0f64, 0usize, 0usize);
        for (i, batch) in batches.enumerate() {
            let (input, labels) = batch?;
            let s = self.step(input, &labels, lr, epoch + 1, i)?;
            loss_sum += s.loss as f64 * s.samples as f64;
            correct += s.correct;
            samples += s.samples;
            on_step(i, &s);
        }
        self.net.clear_cache();
        Ok(TrainStats {
            loss: loss_sum / samples.max(1) as f64,
            accuracy: correct as f64 / samples.max(1) as f64,
            samples,
        })
    }
}

/// Evaluates `net` in eval mode over `batches` with `timesteps` steps.
pub fn evaluate(
    net: &mut Network,
    timesteps: usize,
    loss: Loss,
    batches: impl Iterator<Item = Result<Batch>>,
) -> Result<EvalStats> {
    let mut correct_upto = vec![0usize; timesteps];
    let (mut n, mut loss_sum) = (0usize, 0f64);
    for batch in batches {
        let (input, labels) = batch?;
        let logits = net.forward(input, &ForwardCtx::eval(timesteps))?;
        loss_sum += loss.compute(&logits, &labels, timesteps)?.loss as f64 * labels.len() as f64;
        for (t, c) in correct_upto.iter_mut().enumerate() {
            let p = predict_upto(&logits, labels.len(), timesteps, t + 1);
            *c += p.iter().zip(&labels).filter(|(p, y)| p == y).count();
        }
        n += labels.len();
    }
    let per_t: Vec<f64> = correct_upto
        .iter()
        .map(|&c| c as f64 / n.max(1) as f64)
        .collect();
    Ok(EvalStats {
        accuracy: per_t.last().copied().unwrap_or(0.0),
        accuracy_per_timestep: per_t,
        loss: loss_sum / n.max(1) as f64,
        n,
    })
}

/// Predicted classes (mean over all T) and the mean-over-T logits `[B, classes]` for one batch.
pub fn predict(
    net: &mut Network,
    input: Tensor,
    batch: usize,
    timesteps: usize,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let logits = net.forward(input, &ForwardCtx::eval(timesteps))?;
    let mean = super::loss::mean_over_time(&logits, timesteps);
    let k = logits.shape()[1];
    let predictions = (0..batch)
        .map(|i| super::loss::argmax(&mean[i * k..(i + 1) * k]))
        .collect();
    Ok((predictions, mean.iter().map(|&v| v as f32).collect()))
}
