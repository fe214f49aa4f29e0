//! Figure 3: where each surrogate family passes gradient (`∂O/∂M`, rectangle γ = 1, METHOD.md
//! §3.2–§3.4) against the membrane distribution a real run produced. AS-SG's window has fixed
//! width 1 around θ (floods at small θ, starves at large θ); RS-SG's scales with θ but its
//! height is 1/θ (explodes / vanishes); TrSG scales the window and keeps height 1.

use super::membrane::{mass_range, probabilities};
use super::{color, draw_err, fmt_theta, fonts, size, FONT};
use crate::analysis::grid::surrogate_label;
use crate::error::Result;
use crate::nn::spec::SurrogateKind;
use crate::train::record::{EpochDiagnostics, MembraneRecord};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// The rectangle-γ=1 window of `kind` at threshold θ: `(M from, M to, ∂O/∂M inside)`.
pub(crate) fn window(kind: SurrogateKind, theta: f64) -> (f64, f64, f64) {
    match kind {
        SurrogateKind::As => (theta - 0.5, theta + 0.5, 1.0),
        SurrogateKind::Rs => (0.5 * theta, 1.5 * theta, 1.0 / theta),
        SurrogateKind::Trsg => (0.5 * theta, 1.5 * theta, 1.0),
    }
}

/// Fraction of recorded neuron-steps whose bin centre lies in `[m_lo, m_hi]` (in units of M),
/// pooled over timesteps: the bin-resolution estimate of RatioAG for any window.
pub(crate) fn fraction_in(r: &MembraneRecord, theta: f64, m_lo: f64, m_hi: f64) -> f64 {
    let n = r.bins();
    let width = (r.hi - r.lo) as f64 / n.max(1) as f64;
    let (mut inside, mut total) = (0.0, 0.0);
    for t in 0..r.counts.len() {
        let w = r.total[t] as f64;
        for (i, p) in probabilities(r, t).iter().enumerate().skip(1).take(n) {
            let m = (r.lo as f64 + (i as f64 - 0.5) * width) * theta;
            if m >= m_lo && m <= m_hi {
                inside += p * w;
            }
        }
        total += w;
    }
    if total > 0.0 {
        inside / total
    } else {
        0.0
    }
}

/// One panel to draw.
pub(crate) struct Panel<'a> {
    pub kind: SurrogateKind,
    pub theta: f64,
    /// The membrane record to draw under the window (`None`: the run left none, e.g. diverged).
    pub record: Option<&'a MembraneRecord>,
    /// The recorder's exact RatioAG, when the record is from a run with this very surrogate.
    pub exact_ratio: Option<f64>,
    /// Extra text under the caption (e.g. "diverged in epoch 1").
    pub note: Option<String>,
    /// Upper limit of the gradient axis (shared along a row, so heights compare).
    pub g_max: f64,
}

fn draw_panel(area: &DrawingArea<BitMapBackend, Shift>, p: &Panel, path: &Path) -> Result<()> {
    let e = draw_err(path);
    let (w_lo, w_hi, height) = window(p.kind, p.theta);
    let (mut x0, mut x1) = p.record.map_or((-1.0, 2.0), |r| mass_range(&[r], 0.005));
    x0 = (x0 * p.theta).min(w_lo - 0.1 * (w_hi - w_lo));
    x1 = (x1 * p.theta).max(w_hi + 0.1 * (w_hi - w_lo));
    let bars: Vec<(f64, f64, f64)> = p.record.map_or(Vec::new(), |r| {
        let n = r.bins();
        let width = (r.hi - r.lo) as f64 / n.max(1) as f64;
        let mut mass = vec![0f64; n];
        let t_count = r.counts.len().max(1) as f64;
        for t in 0..r.counts.len() {
            for (m, q) in mass.iter_mut().zip(probabilities(r, t).iter().skip(1)) {
                *m += q / t_count;
            }
        }
        (0..n)
            .map(|i| {
                let a = (r.lo as f64 + i as f64 * width) * p.theta;
                (a, a + width * p.theta, mass[i] / (width * p.theta))
            })
            .filter(|b| b.1 > x0 && b.0 < x1)
            .collect()
    });
    // Headroom above the bars for the legend and notes.
    let d_max = bars.iter().map(|b| b.2).fold(0.0f64, f64::max).max(1e-9) * 1.55;
    let ratio = p
        .exact_ratio
        .or_else(|| p.record.map(|r| fraction_in(r, p.theta, w_lo, w_hi)));
    let caption = format!("{}, θ = {}", surrogate_label(p.kind), fmt_theta(p.theta));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .right_y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0f64..d_max)
        .map_err(&e)?
        .set_secondary_coord(x0..x1, 0f64..p.g_max);
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .disable_y_mesh()
        .x_desc("pre-spike membrane M")
        .y_desc("density of M")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(&e)?;
    chart
        .configure_secondary_axes()
        .y_desc("surrogate ∂O/∂M")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(&e)?;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(
            bars.iter()
                .map(|&(a, b, d)| Rectangle::new([(a, 0.0), (b, d)], grey.mix(0.7).filled())),
        )
        .map_err(&e)?
        .label(match p.record {
            Some(r) => format!("M of {} (all t)", r.name),
            None => "no membrane record".into(),
        })
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], grey.filled()));
    let c = color(match p.kind {
        SurrogateKind::As => 1,
        SurrogateKind::Rs => 3,
        SurrogateKind::Trsg => 0,
    });
    let shown = height.min(p.g_max);
    chart
        .draw_secondary_series(std::iter::once(Rectangle::new(
            [(w_lo, 0.0), (w_hi, shown)],
            c.mix(0.25).filled(),
        )))
        .map_err(&e)?;
    chart
        .draw_secondary_series(LineSeries::new(
            vec![
                (x0, 0.0),
                (w_lo, 0.0),
                (w_lo, shown),
                (w_hi, shown),
                (w_hi, 0.0),
                (x1, 0.0),
            ],
            c.stroke_width(3),
        ))
        .map_err(&e)?
        .label(match ratio {
            Some(r) => format!(
                "∂O/∂M = {} on {}{:.1} % of neurons",
                (height * 1000.0).round() / 1000.0,
                if p.exact_ratio.is_some() { "" } else { "≈" },
                100.0 * r
            ),
            None => format!("∂O/∂M = {}", (height * 1000.0).round() / 1000.0),
        })
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    // Mass the histogram range cannot show (|M/θ| beyond the recorder's bins).
    let mut lines: Vec<String> = Vec::new();
    if let Some(r) = p.record {
        let total: u64 = r.total.iter().sum();
        let under: u64 = r.counts.iter().map(|c| c[0]).sum();
        let over: u64 = r.counts.iter().map(|c| c[c.len() - 1]).sum();
        if total > 0 && (under + over) * 1000 > total {
            lines.push(format!(
                "off the axis: {:.1} % below, {:.1} % above",
                100.0 * under as f64 / total as f64,
                100.0 * over as f64 / total as f64
            ));
        }
    }
    lines.extend(p.note.clone());
    for (i, text) in lines.iter().enumerate() {
        chart
            .draw_series(std::iter::once(Text::new(
                text.trim().to_string(),
                (x0 + 0.03 * (x1 - x0), d_max * (0.78 - 0.07 * i as f64)),
                (FONT, 14),
            )))
            .map_err(&e)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::Coordinate(8, 8))
        .draw()
        .map_err(&e)?;
    Ok(())
}

/// Rows of panels (typically: small θ, large θ; columns AS, RS, TrSG).
pub(crate) fn draw(path: &Path, title: &str, rows: &[Vec<Panel>]) -> Result<()> {
    fonts();
    let e = draw_err(path);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let root =
        BitMapBackend::new(path, size(rows.len().max(1), cols, (600, 430))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            &format!("Surrogate-gradient window vs membrane distribution — {title}"),
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(&e)?;
    let areas = root.split_evenly((rows.len().max(1), cols));
    for (r, row) in rows.iter().enumerate() {
        for (c, panel) in row.iter().enumerate() {
            draw_panel(&areas[r * cols + c], panel, path)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// A single run: the three families' windows at the run's θ over one LIF layer's membrane
/// (the second layer if there are several: the first that sees spikes).
pub(crate) fn draw_single(path: &Path, title: &str, diag: &EpochDiagnostics) -> Result<()> {
    let record = diag.membrane.get(1).or(diag.membrane.first());
    let theta = record.map_or(1.0, |r| r.theta as f64);
    let kinds = [SurrogateKind::As, SurrogateKind::Rs, SurrogateKind::Trsg];
    let g_max = kinds
        .iter()
        .map(|&k| window(k, theta).2)
        .fold(0.0, f64::max)
        * 1.2;
    let row: Vec<Panel> = kinds
        .iter()
        .map(|&kind| Panel {
            kind,
            theta,
            record,
            exact_ratio: None,
            note: Some(format!("epoch {}", diag.epoch)),
            g_max,
        })
        .collect();
    draw(path, title, &[row])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_section_3() {
        assert_eq!(window(SurrogateKind::As, 0.1), (-0.4, 0.6, 1.0));
        assert_eq!(window(SurrogateKind::Rs, 2.0), (1.0, 3.0, 0.5));
        assert_eq!(window(SurrogateKind::Trsg, 2.0), (1.0, 3.0, 1.0));
    }

    #[test]
    fn fraction_in_counts_bins_by_centre() {
        // Bins of 0.5θ over [0, 2): centres 0.25, 0.75, 1.25, 1.75; θ = 2 → M centres 0.5..3.5.
        let r = MembraneRecord {
            name: "l".into(),
            theta: 2.0,
            lo: 0.0,
            hi: 2.0,
            counts: vec![vec![0, 1, 1, 1, 1, 0]],
            in_window: vec![0],
            total: vec![4],
            batches: 1,
        };
        assert_eq!(fraction_in(&r, 2.0, 1.0, 3.0), 0.5);
        assert_eq!(fraction_in(&r, 2.0, -10.0, 10.0), 1.0);
    }
}
