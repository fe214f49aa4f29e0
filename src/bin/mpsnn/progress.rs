//! Training progress: a bar on a terminal, plain lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use mpsnn::train::run::{EpochRecord, Progress};
use mpsnn::train::trainer::StepStats;
use std::io::IsTerminal;

/// Draws a progress bar per epoch on a TTY; prints one line per epoch otherwise.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    tty: bool,
    loss: f64,
    correct: usize,
    seen: usize,
}

impl CliProgress {
    /// Chooses the bar or plain lines from whether stderr is a terminal.
    pub fn new() -> Self {
        CliProgress {
            bar: None,
            tty: std::io::stderr().is_terminal(),
            loss: 0.0,
            correct: 0,
            seen: 0,
        }
    }
}

impl Progress for CliProgress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        (self.loss, self.correct, self.seen) = (0.0, 0, 0);
        if self.tty {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, _batch: usize, s: &StepStats) {
        self.loss += s.loss as f64 * s.samples as f64;
        self.correct += s.correct;
        self.seen += s.samples;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}%",
                self.loss / self.seen as f64,
                100.0 * self.correct as f64 / self.seen as f64
            ));
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let per_t: Vec<String> = r
            .test_accuracy_per_timestep
            .iter()
            .map(|a| format!("{:.2}", 100.0 * a))
            .collect();
        let lif: Vec<String> = r
            .lif
            .iter()
            .map(|l| {
                format!(
                    "{}:θ={:.3},τ={:.2},μ={:.3},rate={:.3}",
                    l.name, l.theta, l.tau, l.mu, l.firing_rate
                )
            })
            .collect();
        eprintln!(
            "epoch {:>3}  lr {:.5}  train loss {:.4} acc {:.2}%  test loss {:.4} acc {:.2}%  per-t [{}]  {:.1}s+{:.1}s",
            r.epoch,
            r.lr,
            r.train_loss,
            100.0 * r.train_accuracy,
            r.test_loss,
            100.0 * r.test_accuracy,
            per_t.join(" "),
            r.train_seconds,
            r.eval_seconds
        );
        if !lif.is_empty() {
            eprintln!("           {}", lif.join(" "));
        }
    }
}
