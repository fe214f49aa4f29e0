//! PNG figures drawn from run files (`metrics.jsonl`, `diagnostics.jsonl`, `summary.json`) and
//! grid folders (`grid.json` + `runs/`), with `plotters` on its bitmap backend.
//!
//! | file | what | paper |
//! |---|---|---|
//! | `membrane.png` | distribution of the pre-spike membrane `M[t]/θ` per timestep, per LIF layer; for a grid, without vs with MP-Init | Figure 1 |
//! | `surrogate_windows.png` | the surrogate gradient `∂O/∂M` of AS-SG, RS-SG and TrSG over the real membrane distribution, at small and large θ | Figure 3 |
//! | `curves.png` | training loss (within epochs) and test accuracy per epoch | — |
//! | `accuracy_per_timestep.png` | accuracy of the first t timesteps, bars with ± std over seeds | §4 |
//! | `stability.png` | the §7.7 metrics (AbsStr, RatioAG, GradCV) and, for a θ grid, accuracy against θ | §7.5, §7.7 |
//!
//! Text uses a subset of DejaVu Sans bundled in the crate (`assets/fonts/`, Bitstream Vera
//! licence, see `assets/fonts/README.md`), rendered by `ab_glyph`: no system fonts or C
//! libraries are needed. Colours are the Okabe–Ito palette, which stays distinguishable under
//! the common colour-vision deficiencies, plus viridis for ordered series (timesteps).

mod curves;
mod grid;
mod membrane;
mod stability;
mod surrogate;
mod timestep;

pub use grid::grid_plots;

use crate::analysis::outcome::RunFiles;
use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The font family every figure uses (registered on first use).
pub(crate) const FONT: &str = "sans-serif";

static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold-subset.ttf");

/// Registers the bundled fonts once. Both are checked in and parse (a unit test proves it).
pub(crate) fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let ok = plotters::style::register_font(FONT, FontStyle::Normal, REGULAR).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, BOLD).is_ok();
        debug_assert!(ok, "bundled fonts must parse");
    });
}

/// Okabe–Ito: blue, orange, bluish green, vermillion, reddish purple, sky blue, yellow, black.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// The i-th palette colour (cycling).
pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A colour from viridis at `x` ∈ [0, 1] (dark purple → yellow), for ordered series.
pub(crate) fn viridis(x: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    // Stop at 0.85 so the lightest colour stays visible on white.
    let x = x.clamp(0.0, 1.0) * 0.85 * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// θ for captions: at most 3 decimals, no float noise (`0.1`, not `0.10000000149`).
pub(crate) fn fmt_theta(theta: f64) -> String {
    format!("{}", (theta * 1000.0).round() / 1000.0)
}

/// Wraps a drawing error with the file it was drawing.
pub(crate) fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::bad_file(path, format!("cannot draw: {e:?}"))
}

/// Figure size in pixels of a `rows × cols` panel grid.
pub(crate) fn size(rows: usize, cols: usize, panel: (u32, u32)) -> (u32, u32) {
    (
        (panel.0 * cols as u32).max(1000), // the figure title needs about this much
        panel.1 * rows as u32 + 60,        // room for the figure title
    )
}

/// Draws every single-run figure that `run`'s files allow into `out`; returns the files
/// written. A run without diagnostics (recording off) gets the curves and per-timestep bars.
pub fn run_plots(run_dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let run = RunFiles::load(run_dir)?;
    if run.history.is_empty() {
        return Err(Error::bad_file(
            run_dir.join("metrics.jsonl"),
            "no finished epoch to plot",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let title = run_dir.display().to_string();
    let mut written = Vec::new();
    let path = out.join("curves.png");
    curves::draw(&path, &title, &[curves::Series::from_runs("run", &[&run])])?;
    written.push(path);
    let path = out.join("accuracy_per_timestep.png");
    let last = &run.history[run.history.len() - 1];
    let bars: Vec<timestep::Bars> = vec![timestep::Bars {
        label: format!("epoch {}", last.epoch),
        values: last
            .test_accuracy_per_timestep
            .iter()
            .map(|a| (100.0 * a, 0.0))
            .collect(),
    }];
    timestep::draw(
        &path,
        &title,
        &[(last.test_accuracy_per_timestep.len(), bars)],
    )?;
    written.push(path);
    if let Some(diag) = run.diagnostics.last() {
        let path = out.join("membrane.png");
        membrane::draw(&path, &title, &[("this run".to_string(), diag)])?;
        written.push(path);
        let path = out.join("surrogate_windows.png");
        surrogate::draw_single(&path, &title, diag)?;
        written.push(path);
    }
    if run.history.iter().any(|r| !r.grad.is_empty()) {
        let path = out.join("stability.png");
        stability::draw_run(&path, &title, &run.history)?;
        written.push(path);
    }
    Ok(written)
}

/// Draws the figures of `dir`: a grid folder (with `grid.json`) or a single run folder.
pub fn plot_dir(dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let manifest = crate::analysis::Manifest::file(dir);
    if manifest.exists() {
        let m = crate::analysis::Manifest::read(dir)?;
        grid_plots(dir, &m, out)
    } else {
        run_plots(dir, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_fonts_parse_and_palette_is_distinct() {
        assert!(plotters::style::register_font(FONT, FontStyle::Normal, REGULAR).is_ok());
        assert!(plotters::style::register_font(FONT, FontStyle::Bold, BOLD).is_ok());
        for (i, a) in PALETTE.iter().enumerate() {
            assert!(PALETTE[..i].iter().all(|b| b != a));
        }
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_ne!(viridis(1.0), viridis(0.0));
    }
}
