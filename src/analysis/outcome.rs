//! What a run folder says about its run: finished (with `summary.json`), diverged (with
//! `diverged.json`, written by the grid driver when training hit a non-finite loss), or not
//! finished; plus its per-epoch records and diagnostics.

use crate::error::{Error, Result};
use crate::train::record::EpochDiagnostics;
use crate::train::run::{read_jsonl, EpochRecord, Run, Summary};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a diverged run stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// 1-based epoch.
    pub epoch: usize,
    /// 0-based batch within the epoch.
    pub batch: usize,
    /// What went non-finite, as text since JSON has no NaN: `loss (NaN)`, `gradient of
    /// conv2.weight`.
    pub loss: String,
}

impl Divergence {
    /// The divergence described by a training error, if it is one.
    pub fn from_error(e: &Error) -> Option<Self> {
        match e {
            Error::NonFinite { what, epoch, batch } => Some(Divergence {
                epoch: *epoch,
                batch: *batch,
                loss: what.clone(),
            }),
            _ => None,
        }
    }

    /// Path of the marker file in run folder `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("diverged.json")
    }

    /// Writes the marker into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        crate::train::checkpoint::write_atomic(&Self::file(dir), &text)
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// All epochs done.
    Finished(Box<Summary>),
    /// Stopped on a non-finite loss.
    Diverged(Divergence),
    /// Not started or interrupted.
    Pending,
}

/// A run folder's contents.
#[derive(Clone, Debug)]
pub struct RunFiles {
    /// The folder.
    pub dir: PathBuf,
    /// How it ended.
    pub outcome: Outcome,
    /// `metrics.jsonl` (the epochs completed before any divergence).
    pub history: Vec<EpochRecord>,
    /// `diagnostics.jsonl` (empty if the run did not record).
    pub diagnostics: Vec<EpochDiagnostics>,
}

impl RunFiles {
    /// Reads run folder `dir`. Missing files mean "not there yet"; malformed ones are errors.
    pub fn load(dir: &Path) -> Result<Self> {
        let summary_path = dir.join("summary.json");
        let outcome = if Divergence::file(dir).exists() {
            Outcome::Diverged(read_json(&Divergence::file(dir))?)
        } else if summary_path.exists() {
            Outcome::Finished(Box::new(read_json(&summary_path)?))
        } else {
            Outcome::Pending
        };
        Ok(RunFiles {
            dir: dir.to_path_buf(),
            outcome,
            history: read_jsonl(&dir.join("metrics.jsonl"))?,
            diagnostics: read_jsonl(&Run::diagnostics_file(dir))?,
        })
    }

    /// True when the run needs no more training (finished or diverged).
    pub fn is_done(&self) -> bool {
        !matches!(self.outcome, Outcome::Pending)
    }
}

/// Reads one JSON document.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::bad_file(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_round_trips_through_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let e = Error::NonFinite {
            what: format!("loss ({})", f32::NAN),
            epoch: 2,
            batch: 17,
        };
        let d = Divergence::from_error(&e).unwrap();
        assert_eq!(d.loss, "loss (NaN)");
        d.write(dir.path()).unwrap();
        let run = RunFiles::load(dir.path()).unwrap();
        assert!(run.is_done());
        match run.outcome {
            Outcome::Diverged(back) => assert_eq!(back, d),
            other => panic!("expected a divergence, got {other:?}"),
        }
        assert!(Divergence::from_error(&Error::InvalidArgument("x".into())).is_none());
        let empty = RunFiles::load(&dir.path().join("none")).unwrap();
        assert!(!empty.is_done() && empty.history.is_empty());
    }
}
