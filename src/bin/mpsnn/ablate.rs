//! `mpsnn ablate`: trains every cell of the paper's ablation grids through the same path as
//! `mpsnn train` (each cell is a `mpsnn train` command line, recorded in its folder as
//! `command.txt`), records divergence instead of stopping, and writes the tables and plots.
//!
//! Finished and diverged cells are skipped and interrupted ones resumed, so re-running the same
//! command continues a grid or just rebuilds its tables.

use crate::args::TrainArgs;
use clap::{Args, Parser};
use mpsnn::analysis::grid::{cells, parse_surrogate, Cell, GridKind, GridSpec};
use mpsnn::analysis::outcome::{Divergence, RunFiles};
use mpsnn::analysis::{report, Manifest};
use mpsnn::train::run::Run;
use mpsnn::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// `mpsnn ablate`
#[derive(Args)]
pub struct AblateArgs {
    /// Dataset (as for `mpsnn train`).
    #[arg(long)]
    pub dataset: String,
    /// Model (as for `mpsnn train`).
    #[arg(long)]
    pub model: String,
    /// Timesteps, comma-separated; runs are trained in this order.
    #[arg(long, short = 'T', value_delimiter = ',', default_value = "1,2,4")]
    pub timesteps: Vec<usize>,
    /// Epochs per run.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Seeds per config: 1..=N.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Grids, comma-separated: mp-trsg (§7.3), theta (§7.5), mp-init (§4).
    #[arg(long, value_delimiter = ',', default_value = "mp-trsg,theta")]
    pub grid: Vec<String>,
    /// θ values of the theta grid.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,1,2")]
    pub thetas: Vec<f32>,
    /// Surrogate families of the theta grid.
    #[arg(long, value_delimiter = ',', default_value = "as,rs,trsg")]
    pub surrogates: Vec<String>,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f32,
    /// Dropout before the fully connected layers of every run (0 keeps the grids comparable
    /// with the results in docs/results, made without it).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Data folder (default: $MPSNN_DATA, else the cache folder).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Runs trained at the same time, each on its own pool of `--threads` threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Only rebuild the tables and plots from the runs already there.
    #[arg(long)]
    pub report_only: bool,
    /// Skip the plots.
    #[arg(long)]
    pub no_plot: bool,
    /// Grid folder: runs/, grid.json, results.csv, results.md, plots/.
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses `mpsnn train` flags into [`TrainArgs`], so every cell gets exactly the defaults of
/// the `train` command.
#[derive(Parser)]
#[command(name = "mpsnn train")]
struct TrainLine {
    #[command(flatten)]
    args: TrainArgs,
}

/// The `mpsnn train` arguments of one cell (without the program and subcommand names).
fn train_line(a: &AblateArgs, cell: &Cell, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "--dataset",
        &a.dataset,
        "--model",
        &a.model,
        "-T",
        &cell.timesteps.to_string(),
        "--epochs",
        &a.epochs.to_string(),
        "--batch-size",
        &a.batch_size.to_string(),
        "--lr",
        &a.lr.to_string(),
        "--dropout",
        &a.dropout.to_string(),
        "--seed",
        &cell.seed.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, value) in [
        ("--limit-train", a.limit_train),
        ("--limit-test", a.limit_test),
    ] {
        if let Some(n) = value {
            v.extend([flag.to_string(), n.to_string()]);
        }
    }
    if let Some(d) = &a.data_dir {
        v.extend(["--data-dir".to_string(), d.display().to_string()]);
    }
    v.extend(cell.config.train_flags());
    v.extend(["--out".to_string(), dir.display().to_string()]);
    v
}

/// Trains one cell; a non-finite loss is recorded as a divergence, not an error.
fn run_cell(a: &AblateArgs, cell: &Cell, root: &Path, threads: usize) -> Result<()> {
    let dir = cell.dir(root);
    if RunFiles::load(&dir)?.is_done() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut line = train_line(a, cell, &dir);
    if Run::last_checkpoint(&dir).exists() {
        line.push("--resume".into());
    }
    let command = format!("mpsnn --threads {threads} train {}\n", line.join(" "));
    std::fs::write(dir.join("command.txt"), &command).map_err(|e| Error::io(&dir, e))?;
    let parsed = TrainLine::try_parse_from(std::iter::once("train".to_string()).chain(line))
        .map_err(|e| Error::InvalidArgument(format!("cell {}: {e}", cell.config.id)))?;
    eprintln!(
        "cell {} T={} seed={} -> {}",
        cell.config.id,
        cell.timesteps,
        cell.seed,
        dir.display()
    );
    match crate::commands::train(&parsed.args) {
        Ok(_) => Ok(()),
        Err(e) => match Divergence::from_error(&e) {
            Some(d) => {
                eprintln!("cell {} diverged: {e}", cell.config.id);
                d.write(&dir)
            }
            None => Err(e),
        },
    }
}

/// `mpsnn ablate`
pub fn ablate(a: &AblateArgs) -> Result<()> {
    let spec = GridSpec {
        grids: a
            .grid
            .iter()
            .map(|g| g.parse())
            .collect::<Result<Vec<GridKind>>>()?,
        thetas: a.thetas.clone(),
        surrogates: a
            .surrogates
            .iter()
            .map(|s| parse_surrogate(s))
            .collect::<Result<_>>()?,
    };
    if a.timesteps.contains(&0) || a.seeds == 0 || a.epochs == 0 || a.jobs == 0 {
        return Err(Error::InvalidArgument(
            "timesteps, seeds, epochs and jobs must be at least 1".into(),
        ));
    }
    if let Some(t) = a.thetas.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return Err(Error::InvalidArgument(format!("θ must be > 0, got {t}")));
    }
    let configs = spec.configs();
    let seeds: Vec<u64> = (1..=a.seeds).collect();
    let manifest = Manifest {
        dataset: a.dataset.clone(),
        model: a.model.clone(),
        // Tables list T in ascending order; cells train in the order given on the command line.
        timesteps: {
            let mut t = a.timesteps.clone();
            t.sort_unstable();
            t.dedup();
            t
        },
        epochs: a.epochs,
        seeds: seeds.clone(),
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        grid: spec,
        configs: configs.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    // A report of runs trained earlier keeps the command that trained them.
    let manifest = match Manifest::read(&a.out) {
        Ok(old) if a.report_only && old.configs == manifest.configs => Manifest {
            command: old.command,
            ..manifest
        },
        _ => manifest,
    };
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    manifest.write(&a.out)?;
    if !a.report_only {
        let started = Instant::now();
        let todo = cells(&configs, &a.timesteps, &seeds);
        let threads = rayon::current_num_threads();
        eprintln!(
            "ablate: {} configs x {} T x {} seeds = {} runs, {} at a time on {} thread(s) each",
            configs.len(),
            a.timesteps.len(),
            seeds.len(),
            todo.len(),
            a.jobs,
            threads
        );
        let queue = Mutex::new(todo.iter());
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..a.jobs {
                s.spawn(|| {
                    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                        Ok(p) => p,
                        Err(e) => {
                            *failure.lock().expect("no panics while held") =
                                Some(Error::InvalidArgument(format!("thread pool: {e}")));
                            return;
                        }
                    };
                    loop {
                        if failure.lock().expect("no panics while held").is_some() {
                            return;
                        }
                        let Some(cell) = queue.lock().expect("no panics while held").next() else {
                            return;
                        };
                        if let Err(e) = pool.install(|| run_cell(a, cell, &a.out, threads)) {
                            failure
                                .lock()
                                .expect("no panics while held")
                                .get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().expect("no panics while held") {
            return Err(e);
        }
        eprintln!(
            "ablate: training done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let written = report::write_all(&a.out, &manifest)?;
    for path in &written {
        eprintln!("wrote {}", path.display());
    }
    if !a.no_plot {
        for path in mpsnn::plot::grid_plots(&a.out, &manifest, &a.out.join("plots"))? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
