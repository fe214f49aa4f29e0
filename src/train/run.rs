//! A training run on disk: epochs over a [`DataSource`], evaluation after each epoch,
//! `metrics.jsonl` (one JSON object per epoch), `summary.json`, and atomic checkpoints
//! (`last.ckpt` every epoch, `best.ckpt` on a new best test accuracy) that `resume` continues
//! from exactly. With recording on (the default; [`Run::set_recording`]),
//! `diagnostics.jsonl` holds one [`EpochDiagnostics`] per epoch and each [`EpochRecord`]
//! carries the §7.7 gradient metrics.

use super::checkpoint::{write_atomic, Checkpoint};
use super::record::{EpochDiagnostics, GradRecord, RecordConfig, Recorder};
use super::trainer::{evaluate, Batch, EvalStats, StepStats, TrainConfig, TrainStats, Trainer};
use crate::error::{Error, Result};
use crate::nn::Network;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A boxed stream of batches.
pub type Batches<'a> = Box<dyn Iterator<Item = Result<Batch>> + 'a>;

/// Where a run gets its data. Batches must be a pure function of the seed and the epoch, so a
/// resumed run sees exactly what the uninterrupted run would have.
pub trait DataSource {
    /// Training batches of epoch `epoch` (0-based).
    fn train(&self, epoch: usize) -> Result<Batches<'_>>;
    /// Test batches.
    fn test(&self) -> Result<Batches<'_>>;
    /// Number of training batches per epoch (for progress display).
    fn train_batches(&self) -> usize;
}

/// Receives progress events (the CLI draws a bar; tests ignore them).
pub trait Progress {
    /// An epoch (1-based) of `batches` batches begins.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A training step finished.
    fn step(&mut self, _batch: usize, _stats: &StepStats) {}
    /// An epoch finished, with its metrics.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
}

/// A [`Progress`] that reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// Per-LIF-layer values recorded each epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LifRecord {
    /// Layer name.
    pub name: String,
    /// Threshold θ.
    pub theta: f32,
    /// Time constant τ.
    pub tau: f32,
    /// MP-Init potential μ.
    pub mu: f32,
    /// Spike rate (mean of S over neurons and timesteps) of the last training batch.
    pub firing_rate: f32,
    /// RatioAG: fraction of recorded neuron-steps inside the surrogate window this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_fraction: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate used in this epoch.
    pub lr: f32,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Test accuracy (mean-over-T logits).
    pub test_accuracy: f64,
    /// Test accuracy of the cumulative mean of the first t outputs, t = 1..=T.
    pub test_accuracy_per_timestep: Vec<f64>,
    /// Wall time of the training part of the epoch, seconds.
    pub train_seconds: f64,
    /// Wall time of the evaluation, seconds.
    pub eval_seconds: f64,
    /// θ, τ, μ and firing rate per LIF layer.
    pub lif: Vec<LifRecord>,
    /// Gradient-stability metrics per conv/linear weight (empty when not recording).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grad: Vec<GradRecord>,
}

/// Progress stored in a checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunMeta {
    config: TrainConfig,
    /// Free-form facts about the run the trainer does not need (e.g. `dataset`).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    epochs_done: usize,
    best_accuracy: f64,
    history: Vec<EpochRecord>,
}

/// The final `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Run configuration.
    pub config: TrainConfig,
    /// Epochs completed.
    pub epochs: usize,
    /// Best test accuracy over epochs.
    pub best_test_accuracy: f64,
    /// Final test evaluation.
    pub final_test: EvalStats,
    /// Learnable scalars.
    pub parameters: usize,
    /// Total training wall time, seconds (this process only, if resumed).
    pub train_seconds: f64,
}

/// A training run writing into `dir`.
pub struct Run {
    dir: PathBuf,
    trainer: Trainer,
    epochs_done: usize,
    best_accuracy: f64,
    history: Vec<EpochRecord>,
    labels: BTreeMap<String, String>,
    diagnostics: Vec<EpochDiagnostics>,
}

impl Run {
    /// Path of the checkpoint written after every epoch.
    pub fn last_checkpoint(dir: &Path) -> PathBuf {
        dir.join("last.ckpt")
    }

    /// Path of the checkpoint with the best test accuracy.
    pub fn best_checkpoint(dir: &Path) -> PathBuf {
        dir.join("best.ckpt")
    }

    /// Path of the per-epoch diagnostics (membrane histograms, loss trace).
    pub fn diagnostics_file(dir: &Path) -> PathBuf {
        dir.join("diagnostics.jsonl")
    }

    /// A new run in `dir` (created if needed), recording with [`RecordConfig::default`].
    pub fn new(dir: &Path, net: Network, config: TrainConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut trainer = Trainer::new(net, config);
        trainer.recorder = Some(Recorder::new(RecordConfig::default()));
        Ok(Run {
            dir: dir.to_path_buf(),
            trainer,
            epochs_done: 0,
            best_accuracy: 0.0,
            history: Vec::new(),
            labels: BTreeMap::new(),
            diagnostics: Vec::new(),
        })
    }

    /// Turns diagnostics recording on with `config`, or off with `None`.
    pub fn set_recording(&mut self, config: Option<RecordConfig>) {
        self.trainer.recorder = config.map(Recorder::new);
    }

    /// Continues the run in `dir` from its `last.ckpt`. `epochs` may extend the run; everything
    /// else comes from the checkpoint.
    pub fn resume(dir: &Path, epochs: Option<usize>) -> Result<Self> {
        let path = Self::last_checkpoint(dir);
        let ckpt = Checkpoint::load(&path)?;
        let meta: RunMeta = serde_json::from_value(ckpt.meta.clone())
            .map_err(|e| Error::bad_file(&path, format!("not a training checkpoint: {e}")))?;
        let mut net = Network::new(ckpt.spec.clone(), meta.config.seed)?;
        net.load_state_dict(&ckpt.model)
            .map_err(|e| Error::bad_file(&path, e.to_string()))?;
        let mut config = meta.config;
        if let Some(e) = epochs {
            config.epochs = e;
        }
        let mut trainer = Trainer::new(net, config);
        trainer
            .optimizer
            .load_state_dict(&ckpt.optimizer)
            .map_err(|e| Error::bad_file(&path, e.to_string()))?;
        trainer.recorder = Some(Recorder::new(RecordConfig::default()));
        // Epochs after the checkpoint (from a crash between the two writes) are dropped.
        let diagnostics = read_jsonl::<EpochDiagnostics>(&Self::diagnostics_file(dir))?
            .into_iter()
            .filter(|d| d.epoch <= meta.epochs_done)
            .collect();
        Ok(Run {
            dir: dir.to_path_buf(),
            trainer,
            epochs_done: meta.epochs_done,
            best_accuracy: meta.best_accuracy,
            history: meta.history,
            labels: meta.labels,
            diagnostics,
        })
    }

    /// The trainer (network, optimizer, config).
    pub fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    /// Records a fact about the run in every checkpoint's metadata (`meta.labels.<key>`), e.g.
    /// the dataset name, so tools reading the checkpoint later need not be told.
    pub fn set_label(&mut self, key: &str, value: &str) {
        self.labels.insert(key.to_string(), value.to_string());
    }

    /// A label recorded with [`Run::set_label`].
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Epochs completed so far.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Epoch records so far.
    pub fn history(&self) -> &[EpochRecord] {
        &self.history
    }

    fn checkpoint(&mut self) -> Result<Checkpoint> {
        let meta = RunMeta {
            config: self.trainer.config.clone(),
            labels: self.labels.clone(),
            epochs_done: self.epochs_done,
            best_accuracy: self.best_accuracy,
            history: self.history.clone(),
        };
        Ok(Checkpoint {
            spec: self.trainer.net.spec().clone(),
            model: self.trainer.net.state_dict(),
            optimizer: self.trainer.optimizer.state_dict(),
            meta: serde_json::to_value(meta).map_err(|e| Error::InvalidArgument(e.to_string()))?,
        })
    }

    /// Trains until `config.epochs` epochs are done (or, with `stop_after = Some(n)`, until `n`
    /// epochs are done: an interruption that `resume` continues), evaluating, logging and
    /// checkpointing after each. Returns the summary (also written to `summary.json`).
    pub fn run(
        &mut self,
        data: &dyn DataSource,
        progress: &mut dyn Progress,
        stop_after: Option<usize>,
    ) -> Result<Summary> {
        let started = Instant::now();
        let epochs = self.trainer.config.epochs;
        let until = stop_after.map_or(epochs, |n| n.min(epochs));
        let mut last_test = None;
        while self.epochs_done < until {
            let epoch = self.epochs_done;
            progress.epoch_start(epoch + 1, epochs, data.train_batches());
            let lr = self.trainer.config.lr_at(epoch);
            let t0 = Instant::now();
            let train: TrainStats =
                self.trainer
                    .train_epoch(epoch, data.train(epoch)?, &mut |i, s| progress.step(i, s))?;
            let train_seconds = t0.elapsed().as_secs_f64();
            let mut lif = lif_records(&mut self.trainer.net);
            let (diagnostics, grad) = match &mut self.trainer.recorder {
                Some(r) => {
                    let (d, g) = r.finish_epoch(&mut self.trainer.net, epoch + 1);
                    (Some(d), g)
                }
                None => (None, Vec::new()),
            };
            if let Some(d) = &diagnostics {
                for (l, m) in lif.iter_mut().zip(&d.membrane) {
                    l.window_fraction = m.window_fraction();
                }
            }
            let t1 = Instant::now();
            let test = self.evaluate(data)?;
            let record = EpochRecord {
                epoch: epoch + 1,
                lr,
                train_loss: train.loss,
                train_accuracy: train.accuracy,
                test_loss: test.loss,
                test_accuracy: test.accuracy,
                test_accuracy_per_timestep: test.accuracy_per_timestep.clone(),
                train_seconds,
                eval_seconds: t1.elapsed().as_secs_f64(),
                lif,
                grad,
            };
            self.epochs_done += 1;
            let improved = test.accuracy > self.best_accuracy || self.epochs_done == 1;
            if improved {
                self.best_accuracy = test.accuracy;
            }
            self.history.push(record.clone());
            last_test = Some(test);
            if let Some(dp) = &self.trainer.data_parallel {
                dp.check_replicas(&mut self.trainer.net)?;
            }
            if self.writes_files() {
                let ckpt = self.checkpoint()?;
                if improved {
                    ckpt.save(&Self::best_checkpoint(&self.dir))?;
                }
                ckpt.save(&Self::last_checkpoint(&self.dir))?;
                write_jsonl(&self.dir.join("metrics.jsonl"), &self.history)?;
            }
            if let Some(d) = diagnostics {
                self.diagnostics.push(d);
                if self.writes_files() {
                    write_jsonl(&Self::diagnostics_file(&self.dir), &self.diagnostics)?;
                }
            }
            progress.epoch_end(&record);
        }
        // The last epoch's evaluation is the final one; evaluate only if no epoch ran here.
        let final_test = match last_test {
            Some(test) => test,
            None => self.evaluate(data)?,
        };
        let summary = Summary {
            model: self.trainer.net.spec().name.clone(),
            config: self.trainer.config.clone(),
            epochs: self.epochs_done,
            best_test_accuracy: self.best_accuracy,
            final_test,
            parameters: self.trainer.net.param_count(),
            train_seconds: started.elapsed().as_secs_f64(),
        };
        if self.writes_files() {
            let text = serde_json::to_vec_pretty(&summary)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            write_atomic(&self.dir.join("summary.json"), &text)?;
        }
        Ok(summary)
    }

    /// Only one process of a data-parallel group (rank 0) writes the run folder.
    fn writes_files(&self) -> bool {
        self.trainer
            .data_parallel
            .as_ref()
            .is_none_or(|dp| dp.group().is_root())
    }

    /// Evaluates on `data.test()`; in a data-parallel group every rank evaluates its own shard
    /// and the counts are combined.
    fn evaluate(&mut self, data: &dyn DataSource) -> Result<EvalStats> {
        let (t, loss) = (self.trainer.config.timesteps, self.trainer.config.loss);
        let local = evaluate(&mut self.trainer.net, t, loss, data.test()?)?;
        Ok(match &self.trainer.data_parallel {
            Some(dp) => dp.reduce_eval(local),
            None => local,
        })
    }
}

/// Rewrites `path` with one JSON object per line, atomically, so it always matches the
/// history stored in `last.ckpt` (even after a crash and a resume).
fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut text = Vec::new();
    for r in records {
        serde_json::to_writer(&mut text, r).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        text.push(b'\n');
    }
    write_atomic(path, &text)
}

/// Reads a file written by `write_jsonl`; a missing file is an empty list.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::bad_file(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// θ, τ, μ and the last forward's firing rate of every LIF layer, in forward order.
pub fn lif_records(net: &mut Network) -> Vec<LifRecord> {
    let mut out = Vec::new();
    net.for_each_layer(&mut |layer| {
        if let Some(lif) = layer.as_any().downcast_ref::<crate::nn::lif::Lif>() {
            out.push(LifRecord {
                name: layer.name().to_string(),
                theta: lif.theta(),
                tau: lif.tau() as f32,
                mu: lif.mu(),
                firing_rate: lif.stats().firing_rate as f32,
                window_fraction: None,
            });
        }
    });
    out
}
