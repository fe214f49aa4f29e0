//! The §7.7 gradient-stability metrics: per layer over epochs for one run, and against θ per
//! surrogate family for a frozen-θ grid (with the accuracy that goes with them).

use super::{color, draw_err, fonts, size, FONT};
use crate::analysis::aggregate::{layer_stem, MeanStd};
use crate::analysis::grid::surrogate_label;
use crate::error::Result;
use crate::nn::spec::SurrogateKind;
use crate::train::run::EpochRecord;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A line of (x, y) points with a label and a style index.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    color: usize,
    dashed: bool,
}

#[allow(clippy::too_many_arguments)]
fn panel(
    area: &Area,
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    x_log: bool,
    y_log: bool,
    lines: &[Line],
    legend: SeriesLabelPosition,
) -> Result<()> {
    let e = draw_err(path);
    let pts = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter())
            .filter(|p| p.1.is_finite())
    };
    let (mut x0, mut x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let (mut y0, mut y1) = pts()
        .filter(|p| !y_log || p.1 > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if !(x0.is_finite() && x1.is_finite()) {
        (x0, x1) = (0.0, 1.0);
    }
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = if y_log { (1e-6, 1.0) } else { (0.0, 1.0) };
    }
    if x_log {
        (x0, x1) = (x0 / 1.3, x1 * 1.3);
    } else {
        let pad = ((x1 - x0) * 0.05).max(0.5);
        (x0, x1) = (x0 - pad, x1 + pad);
    }
    if y_log {
        (y0, y1) = (y0 / 2.0, y1 * 2.0);
    } else {
        let pad = ((y1 - y0) * 0.1).max(1e-3);
        y0 = if y0 >= 0.0 { 0.0 } else { y0 - pad };
        y1 += pad;
    }
    let builder = |b: &mut ChartBuilder<BitMapBackend>| {
        b.caption(caption, (FONT, 17))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(75);
    };
    let mut b = ChartBuilder::on(area);
    builder(&mut b);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(BLACK.mix(0.1))
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .x_labels(6)
                .y_labels(if y_log { 5 } else { 8 })
                .x_label_formatter(&|v| format!("{}", (v * 100.0).round() / 100.0))
                .y_label_formatter(&|v| {
                    if y_log {
                        format!("{v:.0e}")
                    } else {
                        format!("{}", (v * 1000.0).round() / 1000.0)
                    }
                })
                .draw()
                .map_err(&e)?;
            for l in lines {
                let c = color(l.color);
                let style = c.stroke_width(if l.dashed { 1 } else { 2 });
                let pts: Vec<(f64, f64)> = l
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite() && (!y_log || p.1 > 0.0))
                    .collect();
                let anno = if l.dashed {
                    chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                } else {
                    chart.draw_series(LineSeries::new(pts.clone(), style))
                }
                .map_err(&e)?;
                if !l.label.is_empty() {
                    let dashed = l.dashed;
                    anno.label(l.label.clone()).legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 20, y)],
                            c.stroke_width(if dashed { 1 } else { 3 }),
                        )
                    });
                }
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(&e)?;
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(legend.clone())
                .draw()
                .map_err(&e)?;
        }};
    }
    match (x_log, y_log) {
        (false, false) => body!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(&e)?),
        (false, true) => body!(b
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(&e)?),
        (true, false) => body!(b
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(&e)?),
        (true, true) => body!(b
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(&e)?),
    }
    Ok(())
}

/// One run: AbsStr and GradCV per weight layer and RatioAG per LIF layer, over epochs.
pub(crate) fn draw_run(path: &Path, title: &str, history: &[EpochRecord]) -> Result<()> {
    fonts();
    let e = draw_err(path);
    let root = BitMapBackend::new(path, size(1, 3, (560, 450))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            &format!("Gradient stability (§7.7) — {title}"),
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(&e)?;
    let areas = root.split_evenly((1, 3));
    let names: Vec<String> = history.first().map_or(Vec::new(), |r| {
        r.grad.iter().map(|g| g.name.clone()).collect()
    });
    let grad_lines = |f: &dyn Fn(&crate::train::record::GradRecord) -> Option<f64>| -> Vec<Line> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Line {
                label: layer_stem(n).to_string(),
                points: history
                    .iter()
                    .filter_map(|r| {
                        r.grad
                            .iter()
                            .find(|g| &g.name == n)
                            .and_then(f)
                            .map(|v| (r.epoch as f64, v))
                    })
                    .collect(),
                color: i,
                dashed: false,
            })
            .collect()
    };
    panel(
        &areas[0],
        path,
        "AbsStr = mean |∂L/∂W|",
        "epoch",
        "mean |g| (log)",
        false,
        true,
        &grad_lines(&|g| g.mean_abs),
        SeriesLabelPosition::UpperRight,
    )?;
    let lifs: Vec<String> = history.first().map_or(Vec::new(), |r| {
        r.lif.iter().map(|l| l.name.clone()).collect()
    });
    let ratio: Vec<Line> = lifs
        .iter()
        .enumerate()
        .map(|(i, n)| Line {
            label: layer_stem(n).to_string(),
            points: history
                .iter()
                .filter_map(|r| {
                    r.lif
                        .iter()
                        .find(|l| &l.name == n)
                        .and_then(|l| l.window_fraction)
                        .map(|v| (r.epoch as f64, 100.0 * v))
                })
                .collect(),
            color: i,
            dashed: false,
        })
        .collect();
    panel(
        &areas[1],
        path,
        "RatioAG = neurons in the surrogate window",
        "epoch",
        "% of neuron-steps",
        false,
        false,
        &ratio,
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &areas[2],
        path,
        "GradCV = std |g| / mean |g|",
        "epoch",
        "coefficient of variation",
        false,
        false,
        &grad_lines(&|g| g.cv),
        SeriesLabelPosition::UpperRight,
    )?;
    root.present().map_err(&e)?;
    Ok(())
}

/// One (θ, family) point of a frozen-θ grid.
pub(crate) struct ThetaPoint {
    pub kind: SurrogateKind,
    pub theta: f64,
    pub accuracy: Option<MeanStd>,
    pub diverged: usize,
    /// AbsStr, RatioAG %, GradCV at the first epoch.
    pub first: [Option<f64>; 3],
    /// The same at the last epoch with records.
    pub last: [Option<f64>; 3],
}

/// Accuracy, AbsStr, RatioAG and GradCV against θ, one line per family.
pub(crate) fn draw_theta_grid(
    path: &Path,
    title: &str,
    pts: &[ThetaPoint],
    layer: &str,
    epochs: (usize, usize),
) -> Result<()> {
    fonts();
    let e = draw_err(path);
    let root = BitMapBackend::new(path, size(2, 2, (640, 440))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            &format!("Frozen θ: accuracy and gradient stability — {title}"),
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(&e)?;
    let areas = root.split_evenly((2, 2));
    let kinds = [SurrogateKind::As, SurrogateKind::Rs, SurrogateKind::Trsg];
    let col = |k: SurrogateKind| match k {
        SurrogateKind::As => 1,
        SurrogateKind::Rs => 3,
        SurrogateKind::Trsg => 0,
    };
    let series = |k: SurrogateKind| {
        let mut v: Vec<&ThetaPoint> = pts.iter().filter(|p| p.kind == k).collect();
        v.sort_by(|a, b| a.theta.total_cmp(&b.theta));
        v
    };
    // Accuracy: diverged cells sit at 0 % and are named in the legend.
    let acc: Vec<Line> = kinds
        .iter()
        .map(|&k| {
            let s = series(k);
            let div: Vec<String> = s
                .iter()
                .filter(|p| p.diverged > 0)
                .map(|p| format!("θ={}", p.theta))
                .collect();
            Line {
                label: if div.is_empty() {
                    surrogate_label(k).to_string()
                } else {
                    format!("{} (diverged at {})", surrogate_label(k), div.join(", "))
                },
                points: s
                    .iter()
                    .map(|p| (p.theta, p.accuracy.map_or(0.0, |a| a.mean)))
                    .collect(),
                color: col(k),
                dashed: false,
            }
        })
        .collect();
    panel(
        &areas[0],
        path,
        "final test accuracy (mean over seeds)",
        "θ (log scale)",
        "test accuracy (%)",
        true,
        false,
        &acc,
        SeriesLabelPosition::LowerRight,
    )?;
    let metric = |i: usize| -> Vec<Line> {
        let mut out = Vec::new();
        for &k in &kinds {
            let s = series(k);
            out.push(Line {
                label: format!("{} epoch {}", surrogate_label(k), epochs.1),
                points: s
                    .iter()
                    .filter_map(|p| p.last[i].map(|v| (p.theta, v)))
                    .collect(),
                color: col(k),
                dashed: false,
            });
            if epochs.0 != epochs.1 {
                out.push(Line {
                    label: format!("{} epoch {}", surrogate_label(k), epochs.0),
                    points: s
                        .iter()
                        .filter_map(|p| p.first[i].map(|v| (p.theta, v)))
                        .collect(),
                    color: col(k),
                    dashed: true,
                });
            }
        }
        out
    };
    let stem = layer_stem(layer);
    panel(
        &areas[1],
        path,
        &format!("AbsStr, {stem}"),
        "θ (log scale)",
        "mean |∂L/∂W| (log)",
        true,
        true,
        &metric(0),
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &areas[2],
        path,
        &format!("RatioAG, {stem}"),
        "θ (log scale)",
        "% neurons in window",
        true,
        false,
        &metric(1),
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &areas[3],
        path,
        &format!("GradCV, {stem}"),
        "θ (log scale)",
        "std |g| / mean |g|",
        true,
        false,
        &metric(2),
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present().map_err(&e)?;
    Ok(())
}
