//! `mpsnn plot`: draws the figures of a run folder or of a grid folder from its files.

use clap::Args;
use mpsnn::Result;
use std::path::PathBuf;

/// `mpsnn plot`
#[derive(Args)]
pub struct PlotArgs {
    /// A run folder (from `mpsnn train`) or a grid folder (from `mpsnn ablate`).
    pub dir: PathBuf,
    /// Where to write the PNGs (default: `<dir>/plots`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `mpsnn plot`
pub fn plot(a: &PlotArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.dir.join("plots"));
    for path in mpsnn::plot::plot_dir(&a.dir, &out)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
