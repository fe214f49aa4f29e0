//! `mpsnn`: train, evaluate, export and deploy spiking networks from the command line.
//!
//! Every command prints a one-line cause and exits non-zero on error; commands that produce a
//! result print it as one JSON object on the last stdout line.

mod ablate;
mod args;
mod commands;
mod datasets;
mod deploy;
mod dist;
mod plot;
mod progress;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let launch = match dist::Launch::start() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ranks sharing a node split its cores instead of each starting one thread per core.
    let threads = cli.threads.or_else(|| {
        let local = dist::local_ranks().filter(|&n| n > 1)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some((cores / local).max(1))
    });
    if let Some(threads) = threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
        {
            eprintln!("error: cannot start {threads} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let group = launch.group();
    match commands::run(cli.command, group.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &group {
                Some(g) => eprintln!("error (rank {}): {e}", g.rank()),
                None => eprintln!("error: {e}"),
            }
            launch.abort_group(1);
            ExitCode::FAILURE
        }
    }
}
