//! Per-epoch training diagnostics, gathered by the trainer while it trains:
//! - membrane histograms per timestep of every LIF layer (the paper's Figure 1 and 3 data),
//!   through the layers' own recorder ([`crate::neuron::recorder`]);
//! - the gradient-stability metrics of METHOD.md §7.7 per conv/linear weight: mean |g|
//!   (AbsStr) and std |g| / mean |g| (GradCV); the fraction of neurons inside the surrogate
//!   window (RatioAG) comes from the histograms;
//! - a loss trace within the epoch, for training curves of short runs.
//!
//! The trainer fills a [`Recorder`]; [`super::run::Run`] turns it into files. Histograms are
//! taken every [`RecordConfig::every`]-th batch (a separate pass over the membrane the forward
//! already wrote); gradient metrics every batch (one pass over the weight gradients, as cheap as
//! the optimizer's own).

use super::trainer::StepStats;
use crate::neuron::recorder::RecorderConfig;
use crate::nn::lif::Lif;
use crate::nn::{Layer, Network};
use serde::{Deserialize, Serialize};

/// What to record and how often.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecordConfig {
    /// Record membrane histograms on batches `0, every, 2·every, ...` of each epoch (≥ 1), and
    /// cut the loss trace into windows of this many batches.
    pub every: usize,
    /// Histogram bins, in units of θ.
    pub bins: RecorderConfig,
}

impl Default for RecordConfig {
    /// Every 8th batch; `M/θ` in `[−4, 6)` at 0.1θ per bin — wide enough for the AS-SG window
    /// `|M − θ| ≤ 1/2` at θ = 0.1, which spans `M/θ ∈ [−4, 6]`.
    fn default() -> Self {
        RecordConfig {
            every: 8,
            bins: RecorderConfig {
                lo: -4.0,
                hi: 6.0,
                bins: 100,
            },
        }
    }
}

/// The §7.7 gradient metrics of one weight tensor over one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradRecord {
    /// Parameter name (`<layer>.weight`).
    pub name: String,
    /// AbsStr: mean over steps of mean |∂L/∂W|; `None` if any step had a non-finite gradient.
    pub mean_abs: Option<f64>,
    /// GradCV: mean over steps of std |g| / mean |g| (steps with an all-zero gradient are left
    /// out); `None` if non-finite or if every step was all-zero.
    pub cv: Option<f64>,
    /// Training steps that contributed.
    pub steps: usize,
}

/// Per-timestep histograms of `M/θ` of one LIF layer, summed over the recorded batches of an
/// epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembraneRecord {
    /// Layer name.
    pub name: String,
    /// θ at the last recorded batch (bins are relative to the θ of each batch).
    pub theta: f32,
    /// Lower edge of bin 0, in units of θ.
    pub lo: f32,
    /// Upper edge of the last regular bin, in units of θ.
    pub hi: f32,
    /// `counts[t] = [below lo, bin 0, ..., bin n−1, at or above hi (and NaN)]`, t = 0..T.
    pub counts: Vec<Vec<u64>>,
    /// Neurons inside the surrogate window at step t (the layer's own surrogate).
    pub in_window: Vec<u64>,
    /// Neurons recorded at step t.
    pub total: Vec<u64>,
    /// Batches recorded.
    pub batches: usize,
}

impl MembraneRecord {
    /// RatioAG over all timesteps: the fraction of neuron-steps inside the surrogate window
    /// (`None` if nothing was recorded).
    pub fn window_fraction(&self) -> Option<f64> {
        let total: u64 = self.total.iter().sum();
        (total > 0).then(|| self.in_window.iter().sum::<u64>() as f64 / total as f64)
    }

    /// Probability of every bin at step `t` (underflow and overflow included); empty if `t` was
    /// not recorded.
    pub fn probabilities(&self, t: usize) -> Vec<f64> {
        let total = self.total.get(t).copied().unwrap_or(0).max(1) as f64;
        self.counts.get(t).map_or(Vec::new(), |c| {
            c.iter().map(|&k| k as f64 / total).collect()
        })
    }

    /// Total-variation distance between the binned distributions of steps `a` and `b`
    /// (0 = identical, 1 = disjoint): the temporal covariate shift between two timesteps.
    pub fn tv_distance(&self, a: usize, b: usize) -> f64 {
        let (p, q) = (self.probabilities(a), self.probabilities(b));
        0.5 * p.iter().zip(&q).map(|(x, y)| (x - y).abs()).sum::<f64>()
    }

    /// Number of regular bins.
    pub fn bins(&self) -> usize {
        self.counts.first().map_or(0, |c| c.len().saturating_sub(2))
    }

    /// Adds `counts`, `in_window`, `total` of one more recording (any number of timesteps).
    fn merge(&mut self, counts: &[Vec<u64>], in_window: &[u64], total: &[u64]) {
        let t = counts.len().max(self.counts.len());
        let width = counts.first().map_or(0, Vec::len);
        self.counts.resize(t, vec![0; width]);
        self.in_window.resize(t, 0);
        self.total.resize(t, 0);
        for (dst, src) in self.counts.iter_mut().zip(counts) {
            dst.resize(src.len().max(dst.len()), 0);
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
        for (d, s) in self.in_window.iter_mut().zip(in_window) {
            *d += s;
        }
        for (d, s) in self.total.iter_mut().zip(total) {
            *d += s;
        }
        self.batches += 1;
    }
}

/// Mean training loss and accuracy over a window of consecutive batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TracePoint {
    /// 0-based index, within the epoch, of the window's last batch.
    pub batch: usize,
    /// Mean loss over the window (weighted by samples).
    pub loss: f64,
    /// Training accuracy over the window.
    pub accuracy: f64,
}

/// One line of `diagnostics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochDiagnostics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Membrane histograms per LIF layer, in forward order.
    pub membrane: Vec<MembraneRecord>,
    /// Loss trace, one point per window of [`RecordConfig::every`] batches.
    pub loss_trace: Vec<TracePoint>,
}

/// mean |g| and std |g| / mean |g| of one gradient tensor. `None` if any element is not finite;
/// the CV is `None` for an all-zero gradient.
///
/// ```
/// use mpsnn::train::record::grad_stats;
/// // |g| = [1, 3]: mean 2, population std 1, CV 0.5.
/// assert_eq!(grad_stats(&[1.0, -3.0]), Some((2.0, Some(0.5))));
/// assert_eq!(grad_stats(&[0.0, 0.0]), Some((0.0, None)));
/// assert_eq!(grad_stats(&[1.0, f32::NAN]), None);
/// ```
pub fn grad_stats(g: &[f32]) -> Option<(f64, Option<f64>)> {
    if g.is_empty() {
        return Some((0.0, None));
    }
    let (mut s1, mut s2) = (0f64, 0f64);
    for &v in g {
        let a = (v as f64).abs();
        s1 += a;
        s2 += a * a;
    }
    if !(s1.is_finite() && s2.is_finite()) {
        return None;
    }
    let n = g.len() as f64;
    let mean = s1 / n;
    let var = (s2 / n - mean * mean).max(0.0);
    Some((mean, (mean > 0.0).then(|| var.sqrt() / mean)))
}

#[derive(Clone, Debug)]
struct GradAccum {
    name: String,
    sum_mean: f64,
    sum_cv: f64,
    cv_steps: usize,
    steps: usize,
    finite: bool,
}

/// Gathers the diagnostics of one epoch; see the module docs.
#[derive(Clone, Debug)]
pub struct Recorder {
    config: RecordConfig,
    grads: Vec<GradAccum>,
    membrane: Vec<MembraneRecord>,
    trace: Vec<TracePoint>,
    window: (f64, usize, usize, usize),
    recording: bool,
}

impl Recorder {
    /// An empty recorder (`config.every` of 0 is taken as 1).
    pub fn new(mut config: RecordConfig) -> Self {
        config.every = config.every.max(1);
        Recorder {
            config,
            grads: Vec::new(),
            membrane: Vec::new(),
            trace: Vec::new(),
            window: (0.0, 0, 0, 0),
            recording: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> RecordConfig {
        self.config
    }

    /// Before the forward of batch `batch` (0-based in the epoch): switches the LIF
    /// recorders on if this batch is sampled.
    pub fn before_forward(&mut self, net: &mut Network, batch: usize) {
        self.recording = batch.is_multiple_of(self.config.every);
        if self.recording {
            let bins = self.config.bins;
            for_each_lif(net, &mut |lif| lif.set_recorder(Some(bins)));
        }
    }

    /// After the backward of a step (gradients are in `Param::grad`, not yet applied): takes
    /// the gradient metrics, the sampled histograms (switching the recorders off) and the loss.
    pub fn after_backward(&mut self, net: &mut Network, stats: &StepStats) {
        self.observe_gradients(net);
        if self.recording {
            self.harvest(net);
        }
        let w = &mut self.window;
        w.0 += stats.loss as f64 * stats.samples as f64;
        w.1 += stats.correct;
        w.2 += stats.samples;
        w.3 += 1;
        if w.3 == self.config.every {
            self.flush_trace();
        }
    }

    /// Drops the recording of a step that did not finish (e.g. a non-finite loss), switching
    /// the LIF recorders off.
    pub fn cancel_step(&mut self, net: &mut Network) {
        if self.recording {
            for_each_lif(net, &mut |lif| lif.set_recorder(None));
            self.recording = false;
        }
    }

    /// Ends epoch `epoch` (1-based): returns its diagnostics and gradient metrics and starts
    /// afresh. The LIF recorders are off afterwards, so evaluation is not recorded.
    pub fn finish_epoch(
        &mut self,
        net: &mut Network,
        epoch: usize,
    ) -> (EpochDiagnostics, Vec<GradRecord>) {
        self.cancel_step(net);
        if self.window.3 > 0 {
            self.flush_trace();
        }
        let grads = std::mem::take(&mut self.grads)
            .into_iter()
            .map(|a| GradRecord {
                mean_abs: (a.finite && a.steps > 0).then(|| a.sum_mean / a.steps as f64),
                cv: (a.finite && a.cv_steps > 0).then(|| a.sum_cv / a.cv_steps as f64),
                steps: a.steps,
                name: a.name,
            })
            .collect();
        let diag = EpochDiagnostics {
            epoch,
            membrane: std::mem::take(&mut self.membrane),
            loss_trace: std::mem::take(&mut self.trace),
        };
        (diag, grads)
    }

    fn flush_trace(&mut self) {
        let (loss, correct, samples, batches) = std::mem::replace(&mut self.window, (0.0, 0, 0, 0));
        let last = self.trace.last().map_or(0, |p| p.batch + 1) + batches - 1;
        self.trace.push(TracePoint {
            batch: last,
            loss: loss / samples.max(1) as f64,
            accuracy: correct as f64 / samples.max(1) as f64,
        });
    }

    fn observe_gradients(&mut self, net: &mut Network) {
        let mut i = 0;
        let grads = &mut self.grads;
        net.visit_params(&mut |p| {
            if !p.trainable || p.value.shape().len() < 2 {
                return;
            }
            if grads.len() <= i {
                grads.push(GradAccum {
                    name: p.name.clone(),
                    sum_mean: 0.0,
                    sum_cv: 0.0,
                    cv_steps: 0,
                    steps: 0,
                    finite: true,
                });
            }
            let a = &mut grads[i];
            match grad_stats(p.grad.data()) {
                Some((mean, cv)) => {
                    a.sum_mean += mean;
                    if let Some(cv) = cv {
                        a.sum_cv += cv;
                        a.cv_steps += 1;
                    }
                }
                None => a.finite = false,
            }
            a.steps += 1;
            i += 1;
        });
    }

    fn harvest(&mut self, net: &mut Network) {
        let mut i = 0;
        let (membrane, bins) = (&mut self.membrane, self.config.bins);
        for_each_lif(net, &mut |lif| {
            if let Some(h) = lif.histogram() {
                if membrane.len() <= i {
                    membrane.push(MembraneRecord {
                        name: lif.name().to_string(),
                        theta: lif.theta(),
                        lo: bins.lo,
                        hi: bins.hi,
                        counts: Vec::new(),
                        in_window: Vec::new(),
                        total: Vec::new(),
                        batches: 0,
                    });
                }
                let rec = &mut membrane[i];
                rec.theta = lif.theta();
                rec.merge(&h.counts, &h.in_window, &h.total);
                i += 1;
            }
            lif.set_recorder(None);
        });
        self.recording = false;
    }
}

/// Calls `f` on every LIF layer of `net`, in forward order.
fn for_each_lif(net: &mut Network, f: &mut dyn FnMut(&mut Lif)) {
    net.for_each_layer(&mut |layer| {
        if let Some(lif) = layer.as_any_mut().downcast_mut::<Lif>() {
            f(lif);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_stats_match_hand_computed_values() {
        // |g| = [0, 1, 2, 3, 4]: mean 2, E[g²] = 6, var 2, CV = √2 / 2.
        let (mean, cv) = grad_stats(&[0.0, -1.0, 2.0, -3.0, 4.0]).unwrap();
        assert_eq!(mean, 2.0);
        assert!((cv.unwrap() - std::f64::consts::SQRT_2 / 2.0).abs() < 1e-12);
        // A constant magnitude has CV 0.
        assert_eq!(grad_stats(&[0.5, -0.5, 0.5]), Some((0.5, Some(0.0))));
        assert_eq!(grad_stats(&[f32::INFINITY]), None);
        assert_eq!(grad_stats(&[]), Some((0.0, None)));
    }

    #[test]
    fn merge_adds_per_timestep_and_grows() {
        let mut r = MembraneRecord {
            name: "l".into(),
            theta: 1.0,
            lo: 0.0,
            hi: 1.0,
            counts: vec![vec![1, 2, 3]],
            in_window: vec![1],
            total: vec![6],
            batches: 1,
        };
        r.merge(&[vec![1, 1, 1], vec![0, 2, 0]], &[2, 1], &[3, 2]);
        assert_eq!(r.counts, vec![vec![2, 3, 4], vec![0, 2, 0]]);
        assert_eq!(r.in_window, vec![3, 1]);
        assert_eq!(r.total, vec![9, 2]);
        assert_eq!(r.batches, 2);
        assert_eq!(r.bins(), 1);
        assert_eq!(r.window_fraction(), Some(4.0 / 11.0));
        // t=0: [2, 3, 4]/9, t=1: [0, 2, 0]/2 → TV = (2/9 + |3/9 − 1| + 4/9) / 2 = 2/3.
        assert!((r.tv_distance(0, 1) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.tv_distance(1, 1), 0.0);
    }
}
