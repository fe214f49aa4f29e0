//! Whole-step throughput measurement (`mpsnn bench`), comparable to the PyTorch reference
//! `../shared/ref/torch_snn_bench.py`: synthetic uniform inputs and random labels, warm-up, then
//! the median of timed iterations of a training step (forward + backward + SGD update) or an
//! eval-mode inference pass (after one training-mode forward that calibrates the batch-norm
//! running statistics, so eval-mode spike densities are those of a training step).

use super::optim::OptimizerConfig;
use super::trainer::{TrainConfig, Trainer};
use super::Loss;
use crate::error::Result;
use crate::models::cost::cost;
use crate::nn::conv::Conv2d;
use crate::nn::lif::Lif;
use crate::nn::sequential::Recompute;
use crate::nn::{Encoding, ForwardCtx, Layer, LayerSpec, ModelSpec, Network};
use crate::tensor::Tensor;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Process CPU time (all threads) per timed step, seconds (Linux), if known. On a shared
    /// machine `step_seconds_median / cpu_seconds_per_step` shows how much of the wall time
    /// the process actually ran.
    pub cpu_seconds_per_step: Option<f64>,
    /// Input density (fraction of nonzeros) of every conv layer fed with spikes, by layer name,
    /// from the last step: it decides the spike-aware kernels (`kernels::conv::sparse`).
    /// Synthetic uniform inputs give the densities of an untrained net; trained nets fire less.
    pub conv_spike_density: BTreeMap<String, f64>,
    /// Mean firing rate over all LIF layers of the last step.
    pub mean_firing_rate: Option<f64>,
}

/// Benchmarks `spec` with a batch of `batch` synthetic samples, training with the given
/// recomputation level ([`Network::set_recompute_level`]).
pub fn bench(
    spec: &ModelSpec,
    timesteps: usize,
    batch: usize,
    mode: BenchMode,
    warmup: usize,
    iters: usize,
    recompute: Recompute,
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

    // Inference runs with calibrated batch-norm statistics: one training-mode forward with
    // momentum 1 sets the running statistics to those of a few of the batch's samples. At the
    // initial running statistics (mean 0, variance 1) an untrained net barely fires in eval mode
    // (0.01 %), which would make the spike-aware kernels look better than on any real model.
    // A small calibration batch keeps that training forward's caches out of the peak RSS.
    let mut net_spec = spec.clone();
    if mode == BenchMode::Infer {
        set_bn_momentum(&mut net_spec.layers, 1.0);
    }
    let mut net = Network::new(net_spec, 0)?;
    net.set_recompute_level(recompute);
    if mode == BenchMode::Infer {
        let calibration = leading_samples(&input, spec.encoding, timesteps, batch.min(8))?;
        net.forward(calibration, &ForwardCtx::train(timesteps))?;
        net.clear_cache();
    }
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
    let mut cpu0 = None;
    for i in 0..warmup + iters {
        if i == warmup {
            cpu0 = cpu_seconds();
        }
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
    let cpu_per_step = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if iters > 0 => Some((b - a) / iters as f64),
        _ => None,
    };
    let (conv_spike_density, mean_firing_rate) = densities(&mut trainer.net);
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
        cpu_seconds_per_step: cpu_per_step,
        conv_spike_density,
        mean_firing_rate,
    })
}

/// The first `keep` samples of a batch (`Frames`: of every timestep, rows `t·B + b`).
fn leading_samples(
    input: &Tensor,
    encoding: Encoding,
    timesteps: usize,
    keep: usize,
) -> Result<Tensor> {
    let rows = input.shape()[0];
    let per_row = input.len() / rows.max(1);
    let (blocks, batch) = match encoding {
        Encoding::Direct => (1, rows),
        Encoding::Frames => (timesteps, rows / timesteps),
    };
    let mut data = Vec::with_capacity(blocks * keep * per_row);
    for t in 0..blocks {
        let start = t * batch * per_row;
        data.extend_from_slice(&input.data()[start..start + keep * per_row]);
    }
    let mut shape = input.shape().to_vec();
    shape[0] = blocks * keep;
    Tensor::from_vec(&shape, data)
}

fn set_bn_momentum(layers: &mut [LayerSpec], momentum: f32) {
    for layer in layers {
        match layer {
            LayerSpec::Batchnorm2d(bn) => bn.momentum = momentum,
            LayerSpec::Residual(r) => {
                set_bn_momentum(&mut r.body, momentum);
                set_bn_momentum(&mut r.shortcut, momentum);
            }
            _ => {}
        }
    }
}

/// Conv spike-input densities and the mean LIF firing rate of the last forward.
fn densities(net: &mut Network) -> (BTreeMap<String, f64>, Option<f64>) {
    let (mut conv, mut rates) = (BTreeMap::new(), Vec::new());
    net.for_each_layer(&mut |layer| {
        let any = layer.as_any();
        if let Some(c) = any.downcast_ref::<Conv2d>() {
            if let Some(d) = c.last_input_density() {
                conv.insert(c.name().to_string(), d);
            }
        } else if let Some(l) = any.downcast_ref::<Lif>() {
            rates.push(l.stats().firing_rate);
        }
    });
    let mean = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
    (conv, mean)
}

/// User + system CPU time of this process (all threads), seconds (Linux only).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // The kernel reports clock ticks of USER_HZ = 100 on every Linux ABI.
    Some(ticks / 100.0)
}

/// Peak resident set size of this process in MB (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
