//! An opt-in diagnostic: per-timestep histograms of the pre-spike membrane M in units of θ, and
//! the fraction of neurons inside the surrogate window `|x| ≤ γ/2` (the paper's RatioAG,
//! METHOD.md §7.7). It reads the membrane the forward pass already produced, in a separate
//! pass, so the default path pays nothing.

use super::surrogate::{Surrogate, SurrogateKind};

/// Histogram bins: `bins` equal bins over `[lo, hi)` of `M/θ`, plus one underflow and one
/// overflow bin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecorderConfig {
    /// Lower edge, in units of θ.
    pub lo: f32,
    /// Upper edge, in units of θ.
    pub hi: f32,
    /// Number of bins inside `[lo, hi)`.
    pub bins: usize,
}

impl Default for RecorderConfig {
    /// `[−2θ, 3θ)` in 50 bins of 0.1θ.
    fn default() -> Self {
        RecorderConfig {
            lo: -2.0,
            hi: 3.0,
            bins: 50,
        }
    }
}

/// Accumulated membrane statistics, per timestep t (0-based), over every recorded forward.
#[derive(Clone, Debug, PartialEq)]
pub struct MembraneHistogram {
    config: RecorderConfig,
    /// `counts[t]`: `[underflow, bin 0, ..., bin bins−1, overflow]` (NaN counts as overflow).
    pub counts: Vec<Vec<u64>>,
    /// Neurons with `|x| ≤ γ/2` at step t.
    pub in_window: Vec<u64>,
    /// Neurons recorded at step t.
    pub total: Vec<u64>,
}

impl MembraneHistogram {
    /// An empty histogram; `config.bins` ≥ 1 and `lo < hi` are the caller's contract
    /// (a degenerate config puts everything in the overflow bin).
    pub fn new(config: RecorderConfig) -> Self {
        MembraneHistogram {
            config,
            counts: Vec::new(),
            in_window: Vec::new(),
            total: Vec::new(),
        }
    }

    /// The bin layout.
    pub fn config(&self) -> RecorderConfig {
        self.config
    }

    /// Adds one forward pass: `membrane` is M `[T, N]` time-major for threshold `theta`.
    pub fn record(&mut self, membrane: &[f32], timesteps: usize, theta: f32, sur: &Surrogate) {
        if timesteps == 0 || membrane.is_empty() {
            return;
        }
        let n = membrane.len() / timesteps;
        let bins = self.config.bins.max(1);
        if self.counts.len() < timesteps {
            self.counts.resize(timesteps, vec![0; bins + 2]);
            self.in_window.resize(timesteps, 0);
            self.total.resize(timesteps, 0);
        }
        let (lo, width) = (
            self.config.lo,
            (self.config.hi - self.config.lo) / bins as f32,
        );
        let half = sur.gamma() / 2.0;
        for (t, row) in membrane.chunks_exact(n).enumerate().take(timesteps) {
            let counts = &mut self.counts[t];
            for &m in row {
                let r = m / theta;
                let pos = (r - lo) / width;
                let bin = if pos < 0.0 {
                    0
                } else if pos < bins as f32 {
                    1 + pos as usize
                } else {
                    bins + 1
                };
                counts[bin.min(bins + 1)] += 1;
                let x = match sur.kind() {
                    SurrogateKind::As => m - theta,
                    SurrogateKind::Rs | SurrogateKind::Trsg => r - 1.0,
                };
                self.in_window[t] += (x.abs() <= half) as u64;
            }
            self.total[t] += n as u64;
        }
    }

    /// Fraction of recorded neurons inside the surrogate window at step `t` (0 if none).
    pub fn window_fraction(&self, t: usize) -> f64 {
        match self.total.get(t) {
            Some(&n) if n > 0 => self.in_window[t] as f64 / n as f64,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neuron::surrogate::SurrogateShape;

    #[test]
    fn bins_and_window_count_what_they_claim() {
        let sur = Surrogate::new(SurrogateKind::Trsg, SurrogateShape::Rect, 1.0).unwrap();
        let mut h = MembraneHistogram::new(RecorderConfig {
            lo: 0.0,
            hi: 2.0,
            bins: 4,
        });
        // θ = 2: M/θ = [-0.5, 0.25, 0.75, 1.0, 1.6, 5.0] for t = 0 and 1 (two rows of 3).
        let m = [-1.0, 0.5, 1.5, 2.0, 3.2, 10.0];
        h.record(&m, 2, 2.0, &sur);
        assert_eq!(h.counts[0], vec![1, 1, 1, 0, 0, 0]);
        assert_eq!(h.counts[1], vec![0, 0, 0, 1, 1, 1]);
        // window θ/2 ≤ M ≤ 3θ/2: 0.75 at t=0; 1.0 at t=1 (1.6 and 5.0 are outside).
        assert_eq!(h.in_window, vec![1, 1]);
        assert_eq!(h.window_fraction(1), 1.0 / 3.0);
        assert_eq!(h.window_fraction(7), 0.0);
    }
}
