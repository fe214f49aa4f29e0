//! Accuracy of the first t timesteps as grouped bars with ± std error bars.

use super::{color, draw_err, fonts, size, FONT};
use crate::error::Result;
use plotters::prelude::*;
use std::path::Path;

/// One bar per timestep for one config: (mean %, std %) for t = 1..=T.
pub(crate) struct Bars {
    pub label: String,
    pub values: Vec<(f64, f64)>,
}

fn bars_per_panel(panels: &[(usize, Vec<Bars>)]) -> f64 {
    panels.iter().map(|(_, b)| b.len()).max().unwrap_or(1) as f64
}

/// One panel per `(T, bars)`; within a panel, groups by t and one colour per config.
pub(crate) fn draw(path: &Path, title: &str, panels: &[(usize, Vec<Bars>)]) -> Result<()> {
    fonts();
    let e = draw_err(path);
    let cols = panels.len().max(1);
    let root = BitMapBackend::new(path, size(1, cols, (560, 480))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            &format!("Test accuracy using the first t timesteps — {title}"),
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(&e)?;
    let areas = root.split_evenly((1, cols));
    let all: Vec<f64> = panels
        .iter()
        .flat_map(|(_, b)| b.iter().flat_map(|b| b.values.iter().map(|v| v.0 - v.1)))
        .filter(|v| v.is_finite())
        .collect();
    let lo = all.iter().copied().fold(100.0f64, f64::min);
    let lo = ((lo - 3.0) / 5.0).floor().max(0.0) * 5.0;
    let top = panels
        .iter()
        .flat_map(|(_, b)| b.iter().flat_map(|b| b.values.iter().map(|v| v.0 + v.1)))
        .filter(|v| v.is_finite())
        .fold(lo + 1.0, f64::max)
        .min(100.0);
    // Headroom above the tallest bar for the legend; ticks stop at 100 %.
    let hi = top + (top - lo) * (0.08 + 0.07 * bars_per_panel(panels));
    for (area, (t_max, bars)) in areas.iter().zip(panels) {
        let n = bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("trained and tested at T = {t_max}"), (FONT, 17))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..*t_max as f64 + 0.5, lo..hi)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.1))
            .disable_x_mesh()
            .x_desc("timesteps used (t)")
            .y_desc("test accuracy (%)")
            .x_labels(*t_max + 2)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 && *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| {
                if *v <= 100.0 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(&e)?;
        let width = 0.8 / n;
        for (i, b) in bars.iter().enumerate() {
            let c = color(i);
            let x0 = |t: usize| t as f64 + 1.0 - 0.4 + i as f64 * width;
            chart
                .draw_series(b.values.iter().enumerate().map(|(t, &(m, _))| {
                    Rectangle::new([(x0(t), lo), (x0(t) + width * 0.92, m)], c.filled())
                }))
                .map_err(&e)?
                .label(b.label.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
            chart
                .draw_series(b.values.iter().enumerate().filter(|(_, v)| v.1 > 0.0).map(
                    |(t, &(m, s))| {
                        ErrorBar::new_vertical(
                            x0(t) + width * 0.46,
                            m - s,
                            m,
                            (m + s).min(100.0),
                            BLACK.stroke_width(2),
                            8,
                        )
                    },
                ))
                .map_err(&e)?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}
