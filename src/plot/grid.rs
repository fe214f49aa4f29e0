//! The figures of a grid folder, from its runs' files and the aggregated tables.

use super::curves::Series;
use super::stability::ThetaPoint;
use super::surrogate::{window, Panel};
use super::timestep::Bars;
use super::{curves, fonts, membrane, stability, surrogate, timestep};
use crate::analysis::aggregate::{cell_stats, stability_rows, CellStats};
use crate::analysis::grid::{frozen_theta, mp_trsg, run_dir, Config, GridKind};
use crate::analysis::outcome::{Outcome, RunFiles};
use crate::analysis::report::stability_layer;
use crate::analysis::Manifest;
use crate::error::{Error, Result};
use crate::train::record::EpochDiagnostics;
use std::path::{Path, PathBuf};

/// Every run of a grid, loaded once.
struct Runs {
    runs: Vec<(String, usize, u64, RunFiles)>,
}

impl Runs {
    fn load(root: &Path, m: &Manifest) -> Result<Self> {
        let mut runs = Vec::new();
        for c in &m.configs {
            for &t in &m.timesteps {
                for &s in &m.seeds {
                    runs.push((
                        c.id.clone(),
                        t,
                        s,
                        RunFiles::load(&run_dir(root, &c.id, t, s))?,
                    ));
                }
            }
        }
        Ok(Runs { runs })
    }

    /// The seeds' runs of `id` at `t` that have at least one epoch.
    fn of(&self, id: &str, t: usize) -> Vec<&RunFiles> {
        self.runs
            .iter()
            .filter(|r| r.0 == id && r.1 == t && !r.3.history.is_empty())
            .map(|r| &r.3)
            .collect()
    }

    /// The diagnostics of the first seed of `id` at `t` that has any, at `epoch` (or the last).
    fn diagnostics(&self, id: &str, t: usize, epoch: Option<usize>) -> Option<&EpochDiagnostics> {
        self.of(id, t).into_iter().find_map(|r| match epoch {
            Some(e) => r.diagnostics.iter().find(|d| d.epoch == e),
            None => r.diagnostics.last(),
        })
    }
}

/// The `mp-trsg` configs present in the grid, or else every config (at most 8).
fn main_configs(m: &Manifest) -> Vec<&Config> {
    let mp: Vec<&Config> = m
        .configs
        .iter()
        .filter(|c| c.id.starts_with("mp"))
        .collect();
    if mp.is_empty() {
        m.configs.iter().take(8).collect()
    } else {
        mp
    }
}

/// Draws every figure the grid in `root` supports into `out`; returns the files written.
pub fn grid_plots(root: &Path, m: &Manifest, out: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let runs = Runs::load(root, m)?;
    let stats = cell_stats(root, m)?;
    let t_max = m.timesteps.iter().copied().max().unwrap_or(1);
    let title = format!("{} on {}", m.model, m.dataset);
    let mut written = Vec::new();
    let configs = main_configs(m);

    let series: Vec<Series> = configs
        .iter()
        .map(|c| Series::from_runs(&c.label, &runs.of(&c.id, t_max)))
        .filter(|s| !s.test_acc.is_empty())
        .collect();
    if !series.is_empty() {
        let path = out.join("curves.png");
        curves::draw(
            &path,
            &format!("{title}, T = {t_max}, mean of seeds"),
            &series,
        )?;
        written.push(path);
    }

    let panels: Vec<(usize, Vec<Bars>)> = m
        .timesteps
        .iter()
        .map(|&t| {
            let bars = configs
                .iter()
                .filter_map(|c| {
                    stats
                        .iter()
                        .find(|s| s.config.id == c.id && s.timesteps == t)
                })
                .filter(|s| {
                    s.per_timestep.iter().all(Option::is_some) && !s.per_timestep.is_empty()
                })
                .map(|s: &CellStats| Bars {
                    label: s.config.label.clone(),
                    values: s
                        .per_timestep
                        .iter()
                        .map(|v| v.map_or((0.0, 0.0), |v| (v.mean, v.std)))
                        .collect(),
                })
                .collect();
            (t, bars)
        })
        .filter(|(_, b): &(usize, Vec<Bars>)| !b.is_empty())
        .collect();
    if !panels.is_empty() {
        let path = out.join("accuracy_per_timestep.png");
        timestep::draw(&path, &format!("{title}, mean ± std over seeds"), &panels)?;
        written.push(path);
    }

    // Figure 1: the same config without and with MP-Init.
    let pair = [false, true].into_iter().find_map(|tr| {
        let (off, on) = (mp_trsg(false, tr), mp_trsg(true, tr));
        let a = runs.diagnostics(&off.id, t_max, None)?;
        let b = runs.diagnostics(&on.id, t_max, None)?;
        Some(vec![(off.label, a), (on.label, b)])
    });
    let cols = pair.or_else(|| {
        m.configs.iter().find_map(|c| {
            runs.diagnostics(&c.id, t_max, None)
                .map(|d| vec![(c.label.clone(), d)])
        })
    });
    if let Some(cols) = cols {
        let path = out.join("membrane.png");
        membrane::draw(
            &path,
            &format!("{title}, T = {t_max}, seed {}", m.seeds[0]),
            &cols,
        )?;
        written.push(path);
    }

    // Figure 3 and §7.7: the frozen-θ grid.
    let rows_stab = stability_rows(root, m)?;
    let layer = stability_layer(&rows_stab);
    if m.grid.grids.contains(&GridKind::Theta) && !m.grid.thetas.is_empty() {
        // The T with the most finished θ cells, the largest on ties (a grid still training
        // shows what it has).
        let t_max = m
            .timesteps
            .iter()
            .copied()
            .max_by_key(|&t| {
                let done = m
                    .configs
                    .iter()
                    .filter(|c| c.id.starts_with("theta") && !runs.of(&c.id, t).is_empty())
                    .count();
                (done, t)
            })
            .unwrap_or(t_max);
        let mut thetas: Vec<f32> = m
            .grid
            .thetas
            .iter()
            .copied()
            .filter(|&t| t != 1.0)
            .collect();
        if thetas.is_empty() {
            thetas = m.grid.thetas.clone();
        }
        thetas.sort_by(|a, b| a.total_cmp(b));
        let (lo, hi) = (thetas[0], thetas[thetas.len() - 1]);
        let shown: Vec<f32> = if lo == hi { vec![lo] } else { vec![lo, hi] };
        let mut rows = Vec::new();
        for &th in &shown {
            let g_max = m
                .grid
                .surrogates
                .iter()
                .map(|&k| window(k, th as f64).2)
                .fold(0.0, f64::max)
                * 1.2;
            let row: Vec<Panel> = m
                .grid
                .surrogates
                .iter()
                .map(|&kind| {
                    let id = frozen_theta(th, kind).id;
                    let diag = runs.diagnostics(&id, t_max, Some(1));
                    let record = diag.and_then(|d| d.membrane.get(1).or(d.membrane.first()));
                    let note = runs
                        .runs
                        .iter()
                        .filter(|r| r.0 == id && r.1 == t_max)
                        .find_map(|r| match &r.3.outcome {
                            Outcome::Diverged(d) => Some(format!(
                                "seed {} diverged: epoch {}, batch {}",
                                r.2, d.epoch, d.batch
                            )),
                            _ => None,
                        })
                        .or_else(|| record.map(|_| "epoch 1".to_string()));
                    Panel {
                        kind,
                        theta: th as f64,
                        record,
                        exact_ratio: record.and_then(|r| r.window_fraction()),
                        note,
                        g_max,
                    }
                })
                .collect();
            rows.push(row);
        }
        let path = out.join("surrogate_windows.png");
        surrogate::draw(&path, &format!("{title}, T = {t_max}"), &rows)?;
        written.push(path);

        if let Some(layer) = &layer {
            let last_epoch = rows_stab.iter().map(|r| r.epoch).max().unwrap_or(1);
            let pick = |id: &str, epoch: usize| -> [Option<f64>; 3] {
                rows_stab
                    .iter()
                    .find(|r| {
                        r.config == id
                            && r.timesteps == t_max
                            && &r.layer == layer
                            && r.epoch == epoch
                    })
                    .map_or([None; 3], |r| {
                        [
                            r.abs_str.map(|a| a.mean),
                            r.ratio_ag.map(|a| a.mean),
                            r.grad_cv.map(|a| a.mean),
                        ]
                    })
            };
            let mut pts = Vec::new();
            for &th in &m.grid.thetas {
                for &kind in &m.grid.surrogates {
                    let id = frozen_theta(th, kind).id;
                    let Some(s) = stats
                        .iter()
                        .find(|s| s.config.id == id && s.timesteps == t_max)
                    else {
                        continue;
                    };
                    pts.push(ThetaPoint {
                        kind,
                        theta: th as f64,
                        accuracy: s.accuracy,
                        diverged: s.divergences.len(),
                        first: pick(&id, 1),
                        last: pick(&id, last_epoch),
                    });
                }
            }
            let path = out.join("stability.png");
            stability::draw_theta_grid(
                &path,
                &format!("{title}, T = {t_max}"),
                &pts,
                layer,
                (1, last_epoch),
            )?;
            written.push(path);
        }
    } else if let Some(run) = configs
        .first()
        .and_then(|c| runs.of(&c.id, t_max).into_iter().next())
    {
        if let Some(d) = run.diagnostics.last() {
            let path = out.join("surrogate_windows.png");
            surrogate::draw_single(&path, &format!("{title}, T = {t_max}"), d)?;
            written.push(path);
        }
        if run.history.iter().any(|r| !r.grad.is_empty()) {
            let path = out.join("stability.png");
            stability::draw_run(&path, &format!("{title}, T = {t_max}"), &run.history)?;
            written.push(path);
        }
    }
    Ok(written)
}
