//! Mean ± std over seeds of every cell of a grid: final and best test accuracy, accuracy per
//! timestep, divergences, and the §7.7 gradient-stability metrics per layer and epoch.

use super::grid::{run_dir, Config};
use super::outcome::{Divergence, Outcome, RunFiles};
use super::Manifest;
use crate::error::Result;
use std::path::Path;

/// Mean, sample standard deviation (n − 1; 0 for a single value) and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// Number of values.
    pub n: usize,
}

/// Mean ± std of `xs`, or `None` if empty.
///
/// ```
/// use mpsnn::analysis::aggregate::mean_std;
/// let m = mean_std(&[1.0, 2.0, 3.0]).unwrap();
/// assert_eq!((m.mean, m.std, m.n), (2.0, 1.0, 3));
/// assert!(mean_std(&[]).is_none());
/// ```
pub fn mean_std(xs: &[f64]) -> Option<MeanStd> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Some(MeanStd {
        mean,
        std: var.sqrt(),
        n,
    })
}

/// One config at one T, over its seeds. Accuracies are in percent.
#[derive(Clone, Debug)]
pub struct CellStats {
    /// The config.
    pub config: Config,
    /// Timesteps.
    pub timesteps: usize,
    /// Seeds in the grid.
    pub seeds: usize,
    /// Seeds that finished.
    pub finished: usize,
    /// Seeds not (yet) finished.
    pub pending: usize,
    /// Seeds that diverged, with where.
    pub divergences: Vec<(u64, Divergence)>,
    /// Final test accuracy over finished seeds.
    pub accuracy: Option<MeanStd>,
    /// Best-epoch test accuracy over finished seeds.
    pub best: Option<MeanStd>,
    /// Final test accuracy of the first t timesteps, t = 1..=T, over finished seeds.
    pub per_timestep: Vec<Option<MeanStd>>,
    /// Training wall time summed over seeds (all runs of this cell, diverged ones included).
    pub train_seconds: f64,
    /// Per finished seed: (seed, final accuracy %, accuracy % of the first t steps).
    pub per_seed: Vec<(u64, f64, Vec<f64>)>,
}

/// Mean ± std over the seeds both cells finished of `b − a` (accuracy points), for the final
/// accuracy (`t = None`) or the accuracy of the first `t` timesteps. Seeds share the
/// initialization and data order, so the paired difference cancels most seed noise.
pub fn paired_difference(a: &CellStats, b: &CellStats, t: Option<usize>) -> Option<MeanStd> {
    let pick = |s: &(u64, f64, Vec<f64>)| match t {
        None => Some(s.1),
        Some(t) => s.2.get(t).copied(),
    };
    let d: Vec<f64> = b
        .per_seed
        .iter()
        .filter_map(|sb| {
            let sa = a.per_seed.iter().find(|sa| sa.0 == sb.0)?;
            Some(pick(sb)? - pick(sa)?)
        })
        .collect();
    mean_std(&d)
}

/// The statistics of every (config, T) of the grid in `root`, config-major.
pub fn cell_stats(root: &Path, m: &Manifest) -> Result<Vec<CellStats>> {
    let mut out = Vec::new();
    for c in &m.configs {
        for &t in &m.timesteps {
            let mut s = CellStats {
                config: c.clone(),
                timesteps: t,
                seeds: m.seeds.len(),
                finished: 0,
                pending: 0,
                divergences: Vec::new(),
                accuracy: None,
                best: None,
                per_timestep: Vec::new(),
                train_seconds: 0.0,
                per_seed: Vec::new(),
            };
            let (mut acc, mut best, mut per_t) = (Vec::new(), Vec::new(), vec![Vec::new(); t]);
            for &seed in &m.seeds {
                let run = RunFiles::load(&run_dir(root, &c.id, t, seed))?;
                s.train_seconds += run.history.iter().map(|r| r.train_seconds).sum::<f64>();
                match run.outcome {
                    Outcome::Finished(sum) => {
                        s.finished += 1;
                        acc.push(100.0 * sum.final_test.accuracy);
                        s.per_seed.push((
                            seed,
                            100.0 * sum.final_test.accuracy,
                            sum.final_test
                                .accuracy_per_timestep
                                .iter()
                                .map(|a| 100.0 * a)
                                .collect(),
                        ));
                        best.push(100.0 * sum.best_test_accuracy);
                        for (v, a) in per_t.iter_mut().zip(&sum.final_test.accuracy_per_timestep) {
                            v.push(100.0 * a);
                        }
                    }
                    Outcome::Diverged(d) => s.divergences.push((seed, d)),
                    Outcome::Pending => s.pending += 1,
                }
            }
            s.accuracy = mean_std(&acc);
            s.best = mean_std(&best);
            s.per_timestep = per_t.iter().map(|v| mean_std(v)).collect();
            out.push(s);
        }
    }
    Ok(out)
}

/// The temporal covariate shift of one LIF layer: TV distance between the membrane
/// distributions at t = 1 and t = T, at the last recorded epoch, over seeds.
#[derive(Clone, Debug)]
pub struct ShiftRow {
    /// Config id.
    pub config: String,
    /// Timesteps (> 1).
    pub timesteps: usize,
    /// LIF layer.
    pub layer: String,
    /// TV(M\[1\], M\[T\]).
    pub tv: Option<MeanStd>,
}

/// [`ShiftRow`]s of every config at every T > 1 whose runs recorded membranes.
pub fn shift_rows(root: &Path, m: &Manifest) -> Result<Vec<ShiftRow>> {
    let mut out = Vec::new();
    for c in &m.configs {
        for &t in m.timesteps.iter().filter(|&&t| t > 1) {
            let mut per_layer: Vec<(String, Vec<f64>)> = Vec::new();
            for &s in &m.seeds {
                let run = RunFiles::load(&run_dir(root, &c.id, t, s))?;
                let Some(d) = run.diagnostics.last() else {
                    continue;
                };
                for r in &d.membrane {
                    let tv = r.tv_distance(0, r.counts.len().saturating_sub(1));
                    match per_layer.iter_mut().find(|(n, _)| n == &r.name) {
                        Some((_, v)) => v.push(tv),
                        None => per_layer.push((r.name.clone(), vec![tv])),
                    }
                }
            }
            out.extend(per_layer.into_iter().map(|(layer, v)| ShiftRow {
                config: c.id.clone(),
                timesteps: t,
                layer,
                tv: mean_std(&v),
            }));
        }
    }
    Ok(out)
}

/// §7.7 metrics of one weight layer (and the LIF layer it feeds) at one epoch, over seeds.
#[derive(Clone, Debug)]
pub struct StabilityRow {
    /// Config id.
    pub config: String,
    /// Timesteps.
    pub timesteps: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// Weight parameter (`<layer>.weight`).
    pub layer: String,
    /// The LIF layer fed by it, if any (matched by name prefix).
    pub lif: Option<String>,
    /// AbsStr, mean |∂L/∂W|.
    pub abs_str: Option<MeanStd>,
    /// RatioAG in percent, from the LIF layer's membrane record.
    pub ratio_ag: Option<MeanStd>,
    /// GradCV, std |g| / mean |g|.
    pub grad_cv: Option<MeanStd>,
    /// Seeds whose gradient was not finite at some step of this epoch.
    pub nonfinite: usize,
}

/// The name both a weight parameter and a LIF layer start with: `conv2_conv.weight` and
/// `conv2_lif` share `conv2`.
pub fn layer_stem(name: &str) -> &str {
    let base = name.strip_suffix(".weight").unwrap_or(name);
    base.rsplit_once('_').map_or(base, |(stem, _)| stem)
}

/// The stability metrics of every (config, T, layer, epoch) with records, over seeds
/// (diverged runs contribute the epochs they finished).
pub fn stability_rows(root: &Path, m: &Manifest) -> Result<Vec<StabilityRow>> {
    let mut out = Vec::new();
    for c in &m.configs {
        for &t in &m.timesteps {
            let runs: Vec<RunFiles> = m
                .seeds
                .iter()
                .map(|&s| RunFiles::load(&run_dir(root, &c.id, t, s)))
                .collect::<Result<_>>()?;
            let Some(first) = runs.iter().find(|r| !r.history.is_empty()) else {
                continue;
            };
            let layers: Vec<String> = first.history[0]
                .grad
                .iter()
                .map(|g| g.name.clone())
                .collect();
            for epoch in 1..=m.epochs {
                for layer in &layers {
                    let lif = first.history[0]
                        .lif
                        .iter()
                        .find(|l| layer_stem(&l.name) == layer_stem(layer))
                        .map(|l| l.name.clone());
                    let (mut abs, mut ratio, mut cv, mut nonfinite) =
                        (Vec::new(), Vec::new(), Vec::new(), 0);
                    for run in &runs {
                        let Some(rec) = run.history.iter().find(|r| r.epoch == epoch) else {
                            continue;
                        };
                        if let Some(g) = rec.grad.iter().find(|g| &g.name == layer) {
                            match g.mean_abs {
                                Some(v) => abs.push(v),
                                None => nonfinite += 1,
                            }
                            cv.extend(g.cv);
                        }
                        if let Some(l) = lif
                            .as_ref()
                            .and_then(|n| rec.lif.iter().find(|l| &l.name == n))
                        {
                            ratio.extend(l.window_fraction.map(|f| 100.0 * f));
                        }
                    }
                    if abs.is_empty() && nonfinite == 0 {
                        continue;
                    }
                    out.push(StabilityRow {
                        config: c.id.clone(),
                        timesteps: t,
                        epoch,
                        layer: layer.clone(),
                        lif: lif.clone(),
                        abs_str: mean_std(&abs),
                        ratio_ag: mean_std(&ratio),
                        grad_cv: mean_std(&cv),
                        nonfinite,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_uses_the_sample_deviation() {
        let m = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(m.mean, 5.0);
        // Σ(x − 5)² = 32; 32 / 7.
        assert!((m.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        let one = mean_std(&[97.5]).unwrap();
        assert_eq!((one.mean, one.std, one.n), (97.5, 0.0, 1));
    }

    #[test]
    fn paired_differences_match_seeds() {
        let cell = |per_seed: Vec<(u64, f64, Vec<f64>)>| CellStats {
            config: crate::analysis::grid::mp_trsg(false, false),
            timesteps: 2,
            seeds: 3,
            finished: per_seed.len(),
            pending: 0,
            divergences: Vec::new(),
            accuracy: None,
            best: None,
            per_timestep: Vec::new(),
            train_seconds: 0.0,
            per_seed,
        };
        let a = cell(vec![
            (1, 90.0, vec![80.0, 90.0]),
            (2, 92.0, vec![85.0, 92.0]),
        ]);
        // Seed 3 has no partner and is left out.
        let b = cell(vec![
            (2, 93.0, vec![88.0, 93.0]),
            (1, 92.0, vec![83.0, 92.0]),
            (3, 50.0, vec![50.0, 50.0]),
        ]);
        let d = paired_difference(&a, &b, None).unwrap();
        assert_eq!((d.mean, d.n), (1.5, 2));
        assert!((d.std - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(paired_difference(&a, &b, Some(0)).unwrap().mean, 3.0);
        assert!(paired_difference(&a, &b, Some(5)).is_none());
    }

    #[test]
    fn layer_stems_pair_weights_with_neurons() {
        assert_eq!(layer_stem("conv2_conv.weight"), "conv2");
        assert_eq!(layer_stem("conv2_lif"), "conv2");
        assert_eq!(layer_stem("stem_conv.weight"), "stem");
        assert_eq!(layer_stem("fc.weight"), "fc");
    }
}
