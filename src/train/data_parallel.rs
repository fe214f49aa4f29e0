//! Data-parallel training over a [`Collective`]: N ranks, each with a full replica of the
//! network, each stepping on its own slice of every global batch ([`crate::dist::shard`]).
//!
//! One step on rank `r` with `b_r` local samples out of a global batch of `B`:
//! 1. forward on the local batch; synchronized BN layers and the LIF layers' MP-Init statistic
//!    reduce across ranks inside the forward (hooks installed by [`DataParallel::attach`]);
//! 2. the local mean loss's gradient is scaled by `N·b_r/B` ([`DataParallel::batch_share`]; 1
//!    when local batches are equal), so each rank back-propagates its share of the global loss;
//! 3. backward;
//! 4. [`DataParallel::reduce_step`]: one allreduce of every trainable gradient, the buffers no
//!    hook keeps identical (running statistics of unsynchronized BN layers) and the step's loss
//!    and accuracy counts; gradients and those buffers are divided by N.
//!
//! The averaged gradient is then the gradient of the global batch's mean loss, as a single
//! process with batch `B` computes it (up to float reassociation) — exactly so with synchronized
//! BN or without BN; with per-rank BN statistics (the default, as in PyTorch DDP) the forward
//! itself differs from one big batch. The sums are rank-ordered and identical on every rank
//! ([`crate::dist`]), and the optimizer update is elementwise, so parameters, optimizer state and
//! buffers stay bit-identical across ranks; [`DataParallel::check_replicas`] verifies it.

use super::trainer::{EvalStats, StepStats};
use crate::dist::{Collective, SharedCollective};
use crate::error::{Error, Result};
use crate::nn::batchnorm::BatchNorm2d;
use crate::nn::lif::Lif;
use crate::nn::Network;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A [`Collective`] that adds the wall time spent inside every call (including waiting for
/// slower ranks) to a counter.
struct Timed {
    inner: SharedCollective,
    nanos: Arc<AtomicU64>,
}

impl Timed {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        self.nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl Collective for Timed {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn allreduce_sum_f64(&self, buf: &mut [f64]) {
        self.time(|| self.inner.allreduce_sum_f64(buf));
    }
    fn allreduce_sum_f32(&self, buf: &mut [f32]) {
        self.time(|| self.inner.allreduce_sum_f32(buf));
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
        self.time(|| self.inner.broadcast_f32(buf, root));
    }
    fn barrier(&self) {
        self.time(|| self.inner.barrier());
    }
}

/// This rank's part of one step's global batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchShare {
    /// Index of this rank's first sample in the global batch.
    pub offset: u64,
    /// `N·b_r/B`: the factor on this rank's mean-loss gradient.
    pub loss_scale: f32,
}

/// The data-parallel side of a [`super::Trainer`] (its `data_parallel` field); see the module
/// docs for the step.
pub struct DataParallel {
    /// The group, timed: what the step and the layer hooks use.
    group: SharedCollective,
    /// The same group untimed, for once-per-run or once-per-epoch work (attach, evaluation).
    untimed: SharedCollective,
    sync_bn: bool,
    comm_nanos: Arc<AtomicU64>,
    grad_seconds: f64,
    steps: u64,
    /// The flat allreduce buffer, reused across steps.
    flat: Vec<f32>,
}

impl DataParallel {
    /// Data-parallel training over `group`; `sync_bn` chooses synchronized BN statistics
    /// (global-batch statistics) over per-rank ones.
    pub fn new(group: SharedCollective, sync_bn: bool) -> Self {
        let comm_nanos = Arc::new(AtomicU64::new(0));
        let timed: SharedCollective = Arc::new(Timed {
            inner: Arc::clone(&group),
            nanos: Arc::clone(&comm_nanos),
        });
        DataParallel {
            group: timed,
            untimed: group,
            sync_bn,
            comm_nanos,
            grad_seconds: 0.0,
            steps: 0,
            flat: Vec::new(),
        }
    }

    /// The group.
    pub fn group(&self) -> &dyn Collective {
        self.untimed.as_ref()
    }

    /// Whether BN statistics are synchronized.
    pub fn sync_bn(&self) -> bool {
        self.sync_bn
    }

    /// Wall time spent in the collective calls of training steps so far (communication plus
    /// waiting for slower ranks; evaluation and [`DataParallel::attach`] are not counted).
    pub fn comm_seconds(&self) -> f64 {
        self.comm_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// The part of [`DataParallel::comm_seconds`] spent in the end-of-step gradient allreduce
    /// (the rest is the layer hooks and the loss weighting, which are latency-bound).
    pub fn gradient_allreduce_seconds(&self) -> f64 {
        self.grad_seconds
    }

    /// Steps reduced so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Installs the cross-rank hooks (every LIF layer pools its MP-Init statistic; BN layers
    /// synchronize their statistics if `sync_bn`), then copies rank 0's parameters and buffers
    /// to every rank and waits for all ranks. Call it on every rank before the first step (and
    /// after loading a checkpoint).
    pub fn attach(&mut self, net: &mut Network) {
        let (group, sync_bn) = (&self.group, self.sync_bn);
        net.for_each_layer(&mut |layer| {
            let any = layer.as_any_mut();
            if let Some(bn) = any.downcast_mut::<BatchNorm2d>() {
                bn.set_sync(sync_bn.then(|| Arc::clone(group)));
            } else if let Some(lif) = any.downcast_mut::<Lif>() {
                lif.set_sync(Some(Arc::clone(group)));
            }
        });
        let mut flat = Vec::new();
        net.visit_params(&mut |p| flat.extend_from_slice(p.value.data()));
        net.visit_buffers(&mut |b| flat.extend_from_slice(b.value.data()));
        self.untimed.broadcast_f32(&mut flat, 0);
        let mut at = 0;
        let mut take = |t: &mut Tensor| {
            let n = t.len();
            t.data_mut().copy_from_slice(&flat[at..at + n]);
            at += n;
        };
        net.visit_params(&mut |p| take(&mut p.value));
        net.visit_buffers(&mut |b| take(&mut b.value));
        self.untimed.barrier();
    }

    /// Where this rank's `local` samples sit in the step's global batch of `B` samples, and the
    /// factor `N·b_r/B` for its mean-loss gradient (one small allreduce of every rank's size).
    pub fn batch_share(&mut self, local: usize) -> BatchShare {
        let (rank, ranks) = (self.group.rank(), self.group.size());
        let mut sizes = vec![0.0f64; ranks];
        sizes[rank] = local as f64;
        self.group.allreduce_sum_f64(&mut sizes);
        let total: f64 = sizes.iter().sum();
        BatchShare {
            offset: sizes[..rank].iter().sum::<f64>() as u64,
            loss_scale: (ranks as f64 * local as f64 / total.max(1.0)) as f32,
        }
    }

    /// Calls `f` on every buffer that no hook keeps identical across ranks: all buffers except
    /// LIF layers' (μ is pooled) and, with `sync_bn`, BN layers'.
    fn visit_unsynced_buffers(&self, net: &mut Network, f: &mut dyn FnMut(&mut Tensor)) {
        let sync_bn = self.sync_bn;
        net.for_each_layer(&mut |layer| {
            let any = layer.as_any();
            if any.is::<Lif>() || (sync_bn && any.is::<BatchNorm2d>()) {
                return;
            }
            layer.visit_buffers(&mut |b| f(&mut b.value));
        });
    }

    /// After backward: averages every trainable gradient and every unsynchronized buffer over
    /// the ranks in one allreduce, and returns the global step statistics (loss averaged over
    /// all samples, summed counts).
    pub fn reduce_step(&mut self, net: &mut Network, local: StepStats) -> StepStats {
        let mut flat = std::mem::take(&mut self.flat);
        flat.clear();
        net.visit_params(&mut |p| {
            if p.trainable {
                flat.extend_from_slice(p.grad.data());
            }
        });
        self.visit_unsynced_buffers(net, &mut |t| flat.extend_from_slice(t.data()));
        let tail = flat.len();
        flat.extend_from_slice(&[
            local.loss * local.samples as f32,
            local.correct as f32,
            local.samples as f32,
        ]);
        let t0 = Instant::now();
        self.group.allreduce_sum_f32(&mut flat);
        self.grad_seconds += t0.elapsed().as_secs_f64();
        let inv = 1.0 / self.group.size() as f32;
        let mut at = 0;
        let mut take = |t: &mut Tensor| {
            let n = t.len();
            for (v, &s) in t.data_mut().iter_mut().zip(&flat[at..at + n]) {
                *v = s * inv;
            }
            at += n;
        };
        net.visit_params(&mut |p| {
            if p.trainable {
                take(&mut p.grad);
            }
        });
        self.visit_unsynced_buffers(net, &mut take);
        let (loss_sum, correct, samples) = (flat[tail], flat[tail + 1], flat[tail + 2]);
        self.flat = flat;
        self.steps += 1;
        StepStats {
            loss: loss_sum / samples.max(1.0),
            correct: correct as usize,
            samples: samples as usize,
        }
    }

    /// Combines every rank's evaluation of its own shard of the test set into the result for
    /// the whole set (sample-weighted loss, summed correct counts).
    pub fn reduce_eval(&self, local: EvalStats) -> EvalStats {
        let n = local.n as f64;
        let mut buf = vec![n, local.loss * n];
        // Per-rank accuracies are count/n; the products are integers again after rounding.
        buf.extend(local.accuracy_per_timestep.iter().map(|a| (a * n).round()));
        self.untimed.allreduce_sum_f64(&mut buf);
        let total = buf[0];
        let per_t: Vec<f64> = buf[2..].iter().map(|c| c / total.max(1.0)).collect();
        EvalStats {
            accuracy: per_t.last().copied().unwrap_or(0.0),
            accuracy_per_timestep: per_t,
            loss: buf[1] / total.max(1.0),
            n: total as usize,
        }
    }

    /// Fails with [`Error::State`] unless every rank holds bit-identical parameters and buffers
    /// (compared by CRC32 of their bytes).
    pub fn check_replicas(&self, net: &mut Network) -> Result<()> {
        let mut hasher = crc32fast::Hasher::new();
        let mut bytes = Vec::new();
        let mut add = |t: &Tensor| {
            for c in t.data().chunks(4096) {
                bytes.clear();
                bytes.extend(c.iter().flat_map(|v| v.to_le_bytes()));
                hasher.update(&bytes);
            }
        };
        net.visit_params(&mut |p| add(&p.value));
        net.visit_buffers(&mut |b| add(&b.value));
        let (rank, size) = (self.untimed.rank(), self.untimed.size());
        let mut hashes = vec![0f64; size];
        hashes[rank] = hasher.finalize() as f64;
        self.untimed.allreduce_sum_f64(&mut hashes);
        if hashes.iter().all(|&h| h == hashes[0]) {
            Ok(())
        } else {
            Err(Error::State(format!(
                "data-parallel replicas diverged: parameter checksums per rank {:?}",
                hashes.iter().map(|&h| h as u32).collect::<Vec<_>>()
            )))
        }
    }
}
