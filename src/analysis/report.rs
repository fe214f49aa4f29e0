//! The tables of a grid folder: `results.csv` (one row per config and T), `per_timestep.csv`,
//! `stability.csv`, and `results.md` with the paper-style pivots of each.

use super::aggregate::{
    cell_stats, paired_difference, shift_rows, stability_rows, CellStats, MeanStd, ShiftRow,
    StabilityRow,
};
use super::grid::{frozen_theta, mp_trsg, surrogate_label, GridKind};
use super::Manifest;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Column names of `results.csv`.
pub const RESULTS_COLUMNS: &[&str] = &[
    "config",
    "label",
    "mp_init",
    "learnable",
    "surrogate",
    "theta0",
    "timesteps",
    "seeds",
    "finished",
    "diverged",
    "pending",
    "acc_mean",
    "acc_std",
    "best_mean",
    "best_std",
    "diverged_at",
    "train_seconds",
];

/// Quotes a CSV field when it holds a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |x| format!("{x:.digits$}"))
}

/// "97.12 ± 0.31" (or "—").
pub fn pm(m: Option<MeanStd>, digits: usize) -> String {
    match m {
        Some(m) if m.n > 1 => format!("{:.digits$} ± {:.digits$}", m.mean, m.std),
        Some(m) => format!("{:.digits$}", m.mean),
        None => "—".into(),
    }
}

/// The text of a table cell: accuracy, or "div." with how many seeds diverged, or how many
/// are still missing.
pub fn cell_text(s: &CellStats) -> String {
    let div = s.divergences.len();
    let mut text = if s.finished == 0 && div > 0 {
        format!("div. ({div}/{})", s.seeds)
    } else {
        pm(s.accuracy, 2)
    };
    if div > 0 && s.finished > 0 {
        let _ = write!(text, " ({div}/{} div.)", s.seeds);
    }
    if s.pending > 0 {
        let _ = write!(text, " [{}/{} done]", s.seeds - s.pending, s.seeds);
    }
    text
}

fn write(path: PathBuf, text: &str, written: &mut Vec<PathBuf>) -> Result<()> {
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    written.push(path);
    Ok(())
}

/// Writes every table of the grid in `root`; returns the files written.
pub fn write_all(root: &Path, m: &Manifest) -> Result<Vec<PathBuf>> {
    let stats = cell_stats(root, m)?;
    let stability = stability_rows(root, m)?;
    let shift = shift_rows(root, m)?;
    let mut written = Vec::new();
    write(root.join("results.csv"), &results_csv(&stats), &mut written)?;
    write(
        root.join("per_timestep.csv"),
        &per_timestep_csv(&stats),
        &mut written,
    )?;
    write(
        root.join("stability.csv"),
        &stability_csv(&stability),
        &mut written,
    )?;
    write(
        root.join("results.md"),
        &markdown(m, &stats, &stability, &shift),
        &mut written,
    )?;
    Ok(written)
}

/// `results.csv`: [`RESULTS_COLUMNS`], one row per (config, T).
pub fn results_csv(stats: &[CellStats]) -> String {
    let mut out = csv_line(
        &RESULTS_COLUMNS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    );
    for s in stats {
        let c = &s.config;
        let at: Vec<String> = s
            .divergences
            .iter()
            .map(|(seed, d)| format!("seed{seed}:epoch{}:batch{}", d.epoch, d.batch))
            .collect();
        out += &csv_line(&[
            c.id.clone(),
            c.label.clone(),
            c.mp_init.to_string(),
            c.learnable.to_string(),
            surrogate_label(c.surrogate).into(),
            c.theta0.to_string(),
            s.timesteps.to_string(),
            s.seeds.to_string(),
            s.finished.to_string(),
            s.divergences.len().to_string(),
            s.pending.to_string(),
            num(s.accuracy.map(|a| a.mean), 3),
            num(s.accuracy.map(|a| a.std), 3),
            num(s.best.map(|a| a.mean), 3),
            num(s.best.map(|a| a.std), 3),
            at.join(" "),
            format!("{:.1}", s.train_seconds),
        ]);
    }
    out
}

/// `per_timestep.csv`: accuracy of the first t timesteps, one row per (config, T, t).
pub fn per_timestep_csv(stats: &[CellStats]) -> String {
    let mut out = String::from("config,label,timesteps,t,acc_mean,acc_std,n\n");
    for s in stats {
        for (t, m) in s.per_timestep.iter().enumerate() {
            out += &csv_line(&[
                s.config.id.clone(),
                s.config.label.clone(),
                s.timesteps.to_string(),
                (t + 1).to_string(),
                num(m.map(|a| a.mean), 3),
                num(m.map(|a| a.std), 3),
                m.map_or(0, |a| a.n).to_string(),
            ]);
        }
    }
    out
}

/// `stability.csv`: the §7.7 metrics per (config, T, epoch, layer).
pub fn stability_csv(rows: &[StabilityRow]) -> String {
    let mut out = String::from(
        "config,timesteps,epoch,layer,lif,abs_str_mean,abs_str_std,ratio_ag_mean,ratio_ag_std,grad_cv_mean,grad_cv_std,n,nonfinite\n",
    );
    for r in rows {
        out += &csv_line(&[
            r.config.clone(),
            r.timesteps.to_string(),
            r.epoch.to_string(),
            r.layer.clone(),
            r.lif.clone().unwrap_or_default(),
            num(r.abs_str.map(|a| a.mean), 6),
            num(r.abs_str.map(|a| a.std), 6),
            num(r.ratio_ag.map(|a| a.mean), 3),
            num(r.ratio_ag.map(|a| a.std), 3),
            num(r.grad_cv.map(|a| a.mean), 4),
            num(r.grad_cv.map(|a| a.std), 4),
            r.abs_str.map_or(0, |a| a.n).to_string(),
            r.nonfinite.to_string(),
        ]);
    }
    out
}

fn find<'a>(stats: &'a [CellStats], id: &str, t: usize) -> Option<&'a CellStats> {
    stats.iter().find(|s| s.config.id == id && s.timesteps == t)
}

/// The weight layer the §7.7 table shows: the second one (the first conv that sees spikes),
/// or the only one.
pub fn stability_layer(rows: &[StabilityRow]) -> Option<String> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.layer.as_str()) {
            names.push(&r.layer);
        }
    }
    names.get(1).or(names.first()).map(|s| s.to_string())
}

/// `results.md`.
pub fn markdown(
    m: &Manifest,
    stats: &[CellStats],
    stability: &[StabilityRow],
    shift: &[ShiftRow],
) -> String {
    let mut o = String::new();
    let secs: f64 = stats.iter().map(|s| s.train_seconds).sum();
    let _ = writeln!(o, "# Ablations: {} on {}\n", m.model, m.dataset);
    let _ = writeln!(o, "Command: `{}`\n", m.command);
    let _ = writeln!(
        o,
        "Training samples: {}; test samples: {}; {} epoch(s) per run; seeds {:?}; total training time {:.1} min (summed over runs).\n",
        m.limit_train.map_or("all".into(), |n| n.to_string()),
        m.limit_test.map_or("all".into(), |n| n.to_string()),
        m.epochs,
        m.seeds,
        secs / 60.0
    );
    let _ = writeln!(
        o,
        "Accuracy: final-epoch test top-1 %, mean ± sample std over seeds. \"div.\" = training hit a non-finite loss (seeds diverged / seeds).\n"
    );
    let header_t = |o: &mut String, first: &str| {
        let _ = write!(o, "| {first} |");
        for t in &m.timesteps {
            let _ = write!(o, " T={t} |");
        }
        let _ = write!(o, "\n|---|");
        for _ in &m.timesteps {
            let _ = write!(o, "---|");
        }
        o.push('\n');
    };
    if m.grid.grids.contains(&GridKind::MpTrsg) || m.grid.grids.contains(&GridKind::MpInit) {
        let _ = writeln!(o, "## MP-Init × TrSG (paper §7.3)\n");
        header_t(&mut o, "config");
        for c in &m.configs {
            if !c.id.starts_with("mp") {
                continue;
            }
            let _ = write!(o, "| {} |", c.label);
            for &t in &m.timesteps {
                let _ = write!(
                    o,
                    " {} |",
                    find(stats, &c.id, t).map_or("—".into(), cell_text)
                );
            }
            o.push('\n');
        }
        o.push('\n');
        trsg_paired_markdown(&mut o, m, stats);
    }
    if m.grid.grids.contains(&GridKind::Theta) {
        let _ = writeln!(
            o,
            "## Frozen θ, τ = 2, soft reset, MP-Init off (paper §7.5)\n\nAt θ = 1 the three families coincide; that column is the baseline run.\n"
        );
        for &t in &m.timesteps {
            let _ = write!(o, "### T = {t}\n\n| SG |");
            for th in &m.grid.thetas {
                let _ = write!(o, " θ={th} |");
            }
            let _ = write!(o, "\n|---|");
            for _ in &m.grid.thetas {
                let _ = write!(o, "---|");
            }
            o.push('\n');
            for &sg in &m.grid.surrogates {
                let _ = write!(o, "| {} |", surrogate_label(sg));
                for &th in &m.grid.thetas {
                    let id = frozen_theta(th, sg).id;
                    let _ = write!(
                        o,
                        " {} |",
                        find(stats, &id, t).map_or("—".into(), cell_text)
                    );
                }
                o.push('\n');
            }
            o.push('\n');
        }
    }
    let pairs: Vec<_> = [false, true]
        .into_iter()
        .map(|tr| (mp_trsg(false, tr), mp_trsg(true, tr)))
        .filter(|(a, b)| {
            m.configs.iter().any(|c| c.id == a.id) && m.configs.iter().any(|c| c.id == b.id)
        })
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(
            o,
            "## Accuracy of the first t timesteps, with and without MP-Init (paper §4)\n"
        );
        for &t in &m.timesteps {
            let _ = write!(o, "### T = {t}\n\n| config |");
            for k in 1..=t {
                let _ = write!(o, " t={k} |");
            }
            let _ = write!(o, "\n|---|");
            for _ in 1..=t {
                let _ = write!(o, "---|");
            }
            o.push('\n');
            for (off, on) in &pairs {
                for c in [off, on] {
                    let Some(s) = find(stats, &c.id, t) else {
                        continue;
                    };
                    let _ = write!(o, "| {} |", c.label);
                    for v in &s.per_timestep {
                        let _ = write!(o, " {} |", pm(*v, 2));
                    }
                    o.push('\n');
                }
            }
            o.push('\n');
        }
        paired_markdown(&mut o, m, &pairs, stats);
        shift_markdown(&mut o, m, &pairs, shift);
    }
    if let (Some(layer), Some(t)) = (stability_layer(stability), stability_t(m, stability)) {
        let _ = writeln!(
            o,
            "## Gradient stability (paper §7.7), layer `{layer}`, T = {t}\n\nAbsStr = mean |∂L/∂W| and GradCV = std|g| / mean|g| (per step, averaged over the epoch); RatioAG = % of neuron-steps of the LIF layer it feeds inside the surrogate window (sampled batches). \"non-finite\" = the gradient overflowed.\n"
        );
        let _ = writeln!(
            o,
            "| config | epoch | AbsStr | RatioAG % | GradCV |\n|---|---|---|---|---|"
        );
        for c in &m.configs {
            for r in stability
                .iter()
                .filter(|r| r.config == c.id && r.timesteps == t && r.layer == layer)
            {
                let abs = if r.nonfinite > 0 {
                    format!(
                        "non-finite ({}/{})",
                        r.nonfinite,
                        r.nonfinite + r.abs_str.map_or(0, |a| a.n)
                    )
                } else {
                    pm_sci(r.abs_str)
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} |",
                    c.label,
                    r.epoch,
                    abs,
                    pm(r.ratio_ag, 2),
                    pm(r.grad_cv, 3)
                );
            }
        }
        o.push('\n');
    }
    o
}

/// MP-Init's effect per seed: (with − without) accuracy, at t = 1 and at t = T.
fn paired_markdown(
    o: &mut String,
    m: &Manifest,
    pairs: &[(super::grid::Config, super::grid::Config)],
    stats: &[CellStats],
) {
    let _ = writeln!(
        o,
        "### MP-Init, paired by seed\n\nAccuracy with MP-Init minus without, same seed (same initialization and data order), mean ± std over seeds, in points.\n\n| T | θ, τ | Δ at t = 1 | Δ at t = T (final) |\n|---|---|---|---|"
    );
    for &t in &m.timesteps {
        for (off, on) in pairs {
            let (Some(a), Some(b)) = (find(stats, &off.id, t), find(stats, &on.id, t)) else {
                continue;
            };
            let kind = if on.learnable {
                "learnable (TrSG)"
            } else {
                "fixed (θ=1, τ=2)"
            };
            let _ = writeln!(
                o,
                "| {t} | {kind} | {} | {} |",
                pm_signed(paired_difference(a, b, Some(0))),
                pm_signed(paired_difference(a, b, None))
            );
        }
    }
    o.push('\n');
}

/// The T the §7.7 table shows: the one with records for the most configs, the largest on ties
/// (a grid still training shows the T it has finished).
fn stability_t(m: &Manifest, rows: &[StabilityRow]) -> Option<usize> {
    m.timesteps.iter().copied().max_by_key(|&t| {
        let mut ids: Vec<&str> = rows
            .iter()
            .filter(|r| r.timesteps == t)
            .map(|r| r.config.as_str())
            .collect();
        ids.dedup();
        (ids.len(), t)
    })
}

/// The §7.3 effects paired by seed: each change against the config without it.
fn trsg_paired_markdown(o: &mut String, m: &Manifest, stats: &[CellStats]) {
    let rows = [
        (
            "TrSG, MP-Init off",
            mp_trsg(false, false),
            mp_trsg(false, true),
        ),
        (
            "TrSG, MP-Init on",
            mp_trsg(true, false),
            mp_trsg(true, true),
        ),
        (
            "MP-Init, TrSG off",
            mp_trsg(false, false),
            mp_trsg(true, false),
        ),
        (
            "MP-Init, TrSG on",
            mp_trsg(false, true),
            mp_trsg(true, true),
        ),
        (
            "both vs baseline",
            mp_trsg(false, false),
            mp_trsg(true, true),
        ),
    ];
    let _ = writeln!(
        o,
        "### Each change paired by seed\n\nFinal accuracy with the change minus without it, same seed (same initialization and data order), mean ± std over seeds, in points.\n"
    );
    let _ = write!(o, "| change |");
    for t in &m.timesteps {
        let _ = write!(o, " T={t} |");
    }
    let _ = write!(o, "\n|---|");
    for _ in &m.timesteps {
        let _ = write!(o, "---|");
    }
    o.push('\n');
    for (label, a, b) in rows {
        let _ = write!(o, "| {label} |");
        for &t in &m.timesteps {
            let d = match (find(stats, &a.id, t), find(stats, &b.id, t)) {
                (Some(a), Some(b)) => paired_difference(a, b, None),
                _ => None,
            };
            let _ = write!(o, " {} |", pm_signed(d));
        }
        o.push('\n');
    }
    o.push('\n');
}

fn pm_signed(m: Option<MeanStd>) -> String {
    match m {
        Some(m) if m.n > 1 => format!("{:+.2} ± {:.2} (n={})", m.mean, m.std, m.n),
        Some(m) => format!("{:+.2}", m.mean),
        None => "—".into(),
    }
}

/// The temporal-covariate-shift table: TV(M[1], M[T]) per LIF layer for MP-Init off/on.
fn shift_markdown(
    o: &mut String,
    m: &Manifest,
    pairs: &[(super::grid::Config, super::grid::Config)],
    shift: &[ShiftRow],
) {
    let mut layers: Vec<&str> = Vec::new();
    for r in shift {
        if !layers.contains(&r.layer.as_str()) {
            layers.push(&r.layer);
        }
    }
    if layers.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Temporal covariate shift (paper Figure 1)\n\nTotal-variation distance between the distributions of the pre-spike membrane M/θ at t = 1 and at t = T (0 = no shift), last epoch's sampled training batches, mean ± std over seeds.\n"
    );
    let _ = write!(o, "| T | config |");
    for l in &layers {
        let _ = write!(o, " {l} |");
    }
    let _ = write!(o, "\n|---|---|");
    for _ in &layers {
        let _ = write!(o, "---|");
    }
    o.push('\n');
    for &t in m.timesteps.iter().filter(|&&t| t > 1) {
        for (off, on) in pairs {
            for c in [off, on] {
                let _ = write!(o, "| {t} | {} |", c.label);
                for l in &layers {
                    let v = shift
                        .iter()
                        .find(|r| r.config == c.id && r.timesteps == t && r.layer == *l)
                        .and_then(|r| r.tv);
                    let _ = write!(o, " {} |", pm(v, 3));
                }
                o.push('\n');
            }
        }
    }
    o.push('\n');
}

/// Mean ± std in scientific notation (gradient magnitudes span decades).
fn pm_sci(m: Option<MeanStd>) -> String {
    match m {
        Some(m) if m.n > 1 => format!("{:.3e} ± {:.1e}", m.mean, m.std),
        Some(m) => format!("{:.3e}", m.mean),
        None => "—".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::aggregate::mean_std;
    use crate::analysis::outcome::Divergence;

    fn stats(finished: &[f64], diverged: usize, pending: usize) -> CellStats {
        CellStats {
            config: frozen_theta(0.1, crate::nn::spec::SurrogateKind::Rs),
            timesteps: 4,
            seeds: finished.len() + diverged + pending,
            finished: finished.len(),
            pending,
            divergences: (0..diverged)
                .map(|i| {
                    (
                        i as u64 + 1,
                        Divergence {
                            epoch: 1,
                            batch: 3,
                            loss: "NaN".into(),
                        },
                    )
                })
                .collect(),
            accuracy: mean_std(finished),
            best: mean_std(finished),
            per_timestep: vec![],
            train_seconds: 1.0,
            per_seed: vec![],
        }
    }

    #[test]
    fn divergence_is_reported_not_averaged() {
        assert_eq!(cell_text(&stats(&[], 3, 0)), "div. (3/3)");
        assert_eq!(
            cell_text(&stats(&[90.0, 92.0], 1, 0)),
            "91.00 ± 1.41 (1/3 div.)"
        );
        assert_eq!(cell_text(&stats(&[90.0], 0, 2)), "90.00 [1/3 done]");
        let csv = results_csv(&[stats(&[], 2, 0)]);
        let row = csv.lines().nth(1).unwrap();
        assert!(
            row.contains("seed1:epoch1:batch3 seed2:epoch1:batch3"),
            "{row}"
        );
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
