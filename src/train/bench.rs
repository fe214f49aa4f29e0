//! Whole-step throughput measurement (`mpsnn bench`), comparable to the PyTorch reference
//! `../shared/ref/torch_snn_bench.py`: synthetic uniform inputs and random labels, warm-up, then
//! the median of timed iterations of a training step (forward + backward + SGD update) or an
//! eval-mode inference pass.

use super::optim::OptimizerConfig;
use super::trainer::{TrainConfig, Trainer};
use super::Loss;
use crate::error::Result;
use crate::models::cost::cost;
use crate::nn::{Encoding, ForwardCtx, ModelSpec, Network};
use crate::tensor::Tensor;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// Forward + backward + SGD update.
    Train,
    /// Eval-mode forward.
    Infer,
}

/// Result of a benchmark, printed as one JSON object by the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResult {
    /// Model name.
    pub model: String,
    /// Train or infer.
    pub mode: BenchMode,
    /// Timesteps.
    pub timesteps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Rayon threads.
    pub threads: usize,
    /// Images per second (batch / median step time).
    pub images_per_s: f64,
    /// Median step time, seconds.
    pub step_seconds_median: f64,
    /// All timed step times, seconds.
    pub step_seconds: Vec<f64>,
    /// Dense-equivalent GFLOP/s (conv/linear MACs × 2, counted as the PyTorch reference does).
    pub effective_gflops: f64,
    /// GFLOP per image for this mode.
    pub gflop_per_image: f64,
    /// Peak resident set size of the process, MB (Linux `VmHWM`), if known.
    pub peak_rss_mb: Option<f64>,
}

/// Benchmarks `spec` with a batch of `batch` synthetic samples.
pub fn bench(
    spec: &ModelSpec,
    timesteps: usize,
    batch: usize,
    mode: BenchMode,
    warmup: usize,
    iters: usize,
) -> Result<BenchResult> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let rows = match spec.encoding {
        Encoding::Direct => batch,
        Encoding::Frames => batch * timesteps,
    };
    let mut shape = vec![rows];
    shape.extend_from_slice(&spec.input);
    let n: usize = shape.iter().product();
    let input = Tensor::from_vec(&shape, (0..n).map(|_| rng.random::<f32>()).collect())?;
    let labels: Vec<usize> = (0..batch)
        .map(|_| rng.random_range(0..spec.classes))
        .collect();

    let net = Network::new(spec.clone(), 0)?;
    let config = TrainConfig {
        timesteps,
        epochs: 1,
        batch_size: batch,
        lr: 0.1,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        },
        loss: Loss::MeanCe,
        seed: 0,
    };
    let mut trainer = Trainer::new(net, config);
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let x = input.clone();
        let start = Instant::now();
        match mode {
            BenchMode::Train => {
                trainer.step(x, &labels, 0.1, 0, i)?;
            }
            BenchMode::Infer => {
                trainer.net.forward(x, &ForwardCtx::eval(timesteps))?;
            }
        }
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let c = cost(spec, timesteps);
    let per_image = match mode {
        BenchMode::Train => c.train_flops,
        BenchMode::Infer => c.forward_flops,
    };
    let images_per_s = batch as f64 / median;
    Ok(BenchResult {
        model: spec.name.clone(),
        mode,
        timesteps,
        batch_size: batch,
        threads: rayon::current_num_threads(),
        images_per_s,
        step_seconds_median: median,
        step_seconds: times,
        effective_gflops: per_image * images_per_s / 1e9,
        gflop_per_image: per_image / 1e9,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// Peak resident set size of this process in MB (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
