//! Training curves: the loss trace within epochs and the test accuracy after each epoch.

use super::{color, draw_err, fonts, size, FONT};
use crate::analysis::outcome::RunFiles;
use crate::error::Result;
use plotters::prelude::*;
use std::path::Path;

/// One line of the figure: a run, or the mean of several seeds of one config.
pub(crate) struct Series {
    pub label: String,
    /// (epochs elapsed, training loss) within epochs.
    pub loss: Vec<(f64, f64)>,
    /// (epoch, test loss).
    pub test_loss: Vec<(f64, f64)>,
    /// (epoch, test accuracy %).
    pub test_acc: Vec<(f64, f64)>,
}

impl Series {
    /// The mean over `runs` (seeds of one config), point by point; runs that stopped early
    /// (diverged) contribute the points they have.
    pub fn from_runs(label: &str, runs: &[&RunFiles]) -> Series {
        let mut loss: Vec<(f64, f64, usize)> = Vec::new();
        let mut test_loss: Vec<(f64, f64, usize)> = Vec::new();
        let mut test_acc: Vec<(f64, f64, usize)> = Vec::new();
        let add = |v: &mut Vec<(f64, f64, usize)>, i: usize, x: f64, y: f64| {
            if !y.is_finite() {
                return;
            }
            if v.len() <= i {
                v.push((x, 0.0, 0));
            }
            v[i].1 += y;
            v[i].2 += 1;
        };
        for run in runs {
            let mut i = 0;
            for d in &run.diagnostics {
                let batches = d.loss_trace.last().map_or(1, |p| p.batch + 1) as f64;
                for p in &d.loss_trace {
                    let x = (d.epoch - 1) as f64 + (p.batch + 1) as f64 / batches;
                    add(&mut loss, i, x, p.loss);
                    i += 1;
                }
            }
            for (i, r) in run.history.iter().enumerate() {
                add(&mut test_loss, i, r.epoch as f64, r.test_loss);
                add(&mut test_acc, i, r.epoch as f64, 100.0 * r.test_accuracy);
            }
            // Without diagnostics, the epoch means stand in for the trace.
            if run.diagnostics.is_empty() {
                for (i, r) in run.history.iter().enumerate() {
                    add(&mut loss, i, r.epoch as f64, r.train_loss);
                }
            }
        }
        let mean = |v: Vec<(f64, f64, usize)>| -> Vec<(f64, f64)> {
            v.into_iter()
                .map(|(x, s, n)| (x, s / n.max(1) as f64))
                .collect()
        };
        Series {
            label: label.to_string(),
            loss: mean(loss),
            test_loss: mean(test_loss),
            test_acc: mean(test_acc),
        }
    }
}

/// Two panels: training loss (lines; test loss as markers) and test accuracy per epoch.
pub(crate) fn draw(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    fonts();
    let e = draw_err(path);
    let root = BitMapBackend::new(path, size(1, 2, (640, 460))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            &format!("Training curves — {title}"),
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(&e)?;
    let panels = root.split_evenly((1, 2));
    let max_x = series
        .iter()
        .flat_map(|s| s.loss.iter().chain(&s.test_acc).map(|p| p.0))
        .fold(1.0f64, f64::max);
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.loss.iter().chain(&s.test_loss).map(|p| p.1))
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let _ = lo;
    let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
    {
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("loss (lines: training, windowed; dots: test)", (FONT, 17))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_x, 0f64..hi)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.1))
            .x_desc("epoch")
            .y_desc("cross-entropy loss")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(&e)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(s.loss.iter().copied(), c.stroke_width(2)))
                .map_err(&e)?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart
                .draw_series(s.test_loss.iter().map(|&p| Circle::new(p, 5, c.filled())))
                .map_err(&e)?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(&e)?;
    }
    let (alo, ahi) = series
        .iter()
        .flat_map(|s| s.test_acc.iter().map(|p| p.1))
        .fold((100.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let alo = if ahi >= alo {
        (alo - 2.0).max(0.0).floor()
    } else {
        0.0
    };
    let ahi = (ahi + 1.0).min(100.0).max(alo + 1.0);
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("test accuracy after each epoch", (FONT, 17))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..max_x + 0.5, alo..ahi)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .x_desc("epoch")
        .y_desc("test accuracy (%)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_labels(max_x as usize + 2)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(&e)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                s.test_acc.iter().copied(),
                c.stroke_width(2),
            ))
            .map_err(&e)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart
            .draw_series(s.test_acc.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(&e)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}
