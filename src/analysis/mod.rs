//! Reproducing the paper's ablations: grids of training runs ([`grid`]), what each run folder
//! says ([`outcome`]), mean ± std over seeds ([`aggregate`]) and the CSV/Markdown tables
//! ([`report`]). The `mpsnn ablate` command drives it; `mpsnn plot` draws from the same files
//! ([`crate::plot`]).
//!
//! A grid folder holds `grid.json` (the [`Manifest`]), `runs/<config>/T<T>/seed<s>/` (ordinary
//! run folders, see [`crate::train::run`]), and the tables `results.csv`, `results.md`,
//! `per_timestep.csv` and `stability.csv`.

pub mod aggregate;
pub mod grid;
pub mod outcome;
pub mod report;

use crate::error::{Error, Result};
use grid::{Config, GridSpec};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a grid folder was made with (`grid.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Timesteps of the grid.
    pub timesteps: Vec<usize>,
    /// Epochs per run.
    pub epochs: usize,
    /// Seeds per config.
    pub seeds: Vec<u64>,
    /// Training subset, if any.
    pub limit_train: Option<usize>,
    /// Test subset, if any.
    pub limit_test: Option<usize>,
    /// The grids and their parameters.
    pub grid: GridSpec,
    /// The configs they expand to.
    pub configs: Vec<Config>,
    /// The command line that wrote this manifest.
    pub command: String,
}

impl Manifest {
    /// Path of the manifest in grid folder `dir`.
    pub fn file(dir: &Path) -> std::path::PathBuf {
        dir.join("grid.json")
    }

    /// Writes `grid.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        crate::train::checkpoint::write_atomic(&Self::file(dir), &text)
    }

    /// Reads `grid.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        outcome::read_json(&Self::file(dir))
    }
}
