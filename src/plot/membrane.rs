//! Figure 1: the distribution of the pre-spike membrane `M[t]/θ` at each timestep, per LIF
//! layer, side by side for several runs (without / with MP-Init). The legend gives each
//! timestep's total-variation distance to the last timestep's distribution: the temporal
//! covariate shift in one number.

use super::{draw_err, fonts, size, viridis, FONT};
use crate::error::Result;
use crate::train::record::{EpochDiagnostics, MembraneRecord};
use plotters::prelude::*;
use std::path::Path;

/// Probability of every bin (underflow and overflow included) at step `t`.
pub(crate) fn probabilities(r: &MembraneRecord, t: usize) -> Vec<f64> {
    r.probabilities(t)
}

/// Bin centres (in units of θ) and densities (per unit of `M/θ`) of the regular bins at `t`.
pub(crate) fn density(r: &MembraneRecord, t: usize) -> Vec<(f64, f64)> {
    let n = r.bins();
    let width = (r.hi - r.lo) as f64 / n.max(1) as f64;
    let p = probabilities(r, t);
    (0..n)
        .map(|i| {
            (
                r.lo as f64 + (i as f64 + 0.5) * width,
                p.get(i + 1).copied().unwrap_or(0.0) / width,
            )
        })
        .collect()
}

/// The `[q, 1 − q]` quantile range of the regular-bin mass pooled over `records` and their
/// timesteps, widened to multiples of 0.5.
pub(crate) fn mass_range(records: &[&MembraneRecord], q: f64) -> (f64, f64) {
    let Some(first) = records.first() else {
        return (-1.0, 2.0);
    };
    let n = first.bins();
    let width = (first.hi - first.lo) as f64 / n.max(1) as f64;
    let mut mass = vec![0f64; n];
    for r in records {
        for t in 0..r.counts.len() {
            for (m, p) in mass.iter_mut().zip(probabilities(r, t).iter().skip(1)) {
                *m += p;
            }
        }
    }
    let total: f64 = mass.iter().sum();
    if total <= 0.0 {
        return (first.lo as f64, first.hi as f64);
    }
    let (mut acc, mut lo, mut hi) = (0.0, 0usize, n.saturating_sub(1));
    for (i, m) in mass.iter().enumerate() {
        if acc + m >= q * total {
            lo = i;
            break;
        }
        acc += m;
    }
    acc = 0.0;
    for (i, m) in mass.iter().enumerate().rev() {
        if acc + m >= q * total {
            hi = i;
            break;
        }
        acc += m;
    }
    let x = |i: usize| first.lo as f64 + i as f64 * width;
    ((x(lo) * 2.0).floor() / 2.0, (x(hi + 1) * 2.0).ceil() / 2.0)
}

/// Rows: LIF layers of the first run; columns: `(label, diagnostics)` pairs.
pub(crate) fn draw(path: &Path, title: &str, cols: &[(String, &EpochDiagnostics)]) -> Result<()> {
    fonts();
    let e = draw_err(path);
    let layers: Vec<String> = cols.first().map_or(Vec::new(), |c| {
        c.1.membrane.iter().map(|m| m.name.clone()).collect()
    });
    let rows = layers.len().max(1);
    let root =
        BitMapBackend::new(path, size(rows, cols.len().max(1), (620, 400))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            &format!("Membrane potential M[t]/θ per timestep — {title}"),
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(&e)?;
    let areas = root.split_evenly((rows, cols.len().max(1)));
    for (row, layer) in layers.iter().enumerate() {
        let records: Vec<&MembraneRecord> = cols
            .iter()
            .filter_map(|c| c.1.membrane.iter().find(|m| &m.name == layer))
            .collect();
        let (x0, x1) = mass_range(&records, 0.005);
        let mut dens: Vec<f64> = records
            .iter()
            .flat_map(|r| (0..r.counts.len()).flat_map(move |t| density(r, t)))
            .filter(|p| p.0 >= x0 && p.0 <= x1)
            .map(|p| p.1)
            .collect();
        dens.sort_by(|a, b| a.total_cmp(b));
        let max = dens.last().copied().unwrap_or(1.0);
        let p95 = dens.get(dens.len() * 95 / 100).copied().unwrap_or(max);
        // A few tall spikes (e.g. every background pixel of the stem giving the same M) would
        // flatten everything else; such spikes are clipped at 4× the 95th percentile.
        let y1 = (max.min(4.0 * p95) * 1.1).max(1e-6);
        for (col, (label, diag)) in cols.iter().enumerate() {
            let area = &areas[row * cols.len() + col];
            let Some(r) = diag.membrane.iter().find(|m| &m.name == layer) else {
                continue;
            };
            let t_max = r.counts.len();
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{layer} — {label} (epoch {})", diag.epoch),
                    (FONT, 17),
                )
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(65)
                .build_cartesian_2d(x0..x1, 0f64..y1)
                .map_err(&e)?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(BLACK.mix(0.1))
                .x_desc("pre-spike membrane M / θ")
                .y_desc("density")
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(&e)?;
            for t in 0..t_max {
                let c = viridis(if t_max > 1 {
                    t as f64 / (t_max - 1) as f64
                } else {
                    0.0
                });
                let tv = r.tv_distance(t, t_max - 1);
                let pts: Vec<(f64, f64)> = density(r, t)
                    .into_iter()
                    .filter(|p| p.0 >= x0 && p.0 <= x1)
                    .map(|(x, y)| (x, y.min(y1)))
                    .collect();
                let name = if t + 1 < t_max {
                    format!("t={}  TV to t={t_max}: {tv:.2}", t + 1)
                } else {
                    format!("t={}", t + 1)
                };
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(&e)?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                    });
            }
            if x0 <= 1.0 && 1.0 <= x1 {
                let dash = BLACK.mix(0.6).stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(1.0, 0.0), (1.0, y1)],
                        6,
                        4,
                        dash,
                    ))
                    .map_err(&e)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        "θ",
                        (1.0 + 0.02 * (x1 - x0), y1 * 0.97),
                        (FONT, 15),
                    )))
                    .map_err(&e)?;
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(counts: Vec<Vec<u64>>) -> MembraneRecord {
        MembraneRecord {
            name: "l".into(),
            theta: 1.0,
            lo: 0.0,
            hi: 2.0,
            total: counts.iter().map(|c| c.iter().sum()).collect(),
            in_window: vec![0; counts.len()],
            counts,
            batches: 1,
        }
    }

    #[test]
    fn density_integrates_to_the_in_range_mass_and_tv_is_half_l1() {
        // 2 bins of width 1 over [0, 2): 1 below, 2 + 1 inside, 0 above.
        let r = rec(vec![vec![1, 2, 1, 0], vec![0, 0, 4, 0]]);
        assert_eq!(density(&r, 0), vec![(0.5, 0.5), (1.5, 0.25)]);
        assert_eq!(r.tv_distance(0, 1), 0.75);
        assert_eq!(mass_range(&[&r], 0.0), (0.0, 2.0));
    }
}
