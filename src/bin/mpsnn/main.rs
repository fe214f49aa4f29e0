//! `mpsnn`: train, evaluate, export and deploy spiking networks from the command line.
//!
//! Every command prints a one-line cause and exits non-zero on error; commands that produce a
//! result print it as one JSON object on the last stdout line.

mod ablate;
mod args;
mod commands;
mod datasets;
mod deploy;
mod plot;
mod progress;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if let Some(threads) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
        {
            eprintln!("error: cannot start {threads} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
