//! The library's typed error.
//!
//! Every fallible function in `mpsnn` returns [`Result`]. Variants carry enough context (layer
//! name, both shapes, file path, epoch/batch) for the CLI to print a one-line cause.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `mpsnn`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layer received a tensor whose shape it cannot accept.
    #[error("shape mismatch in {layer}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Name of the layer (or operation) that rejected the input.
        layer: String,
        /// What the layer expected, e.g. `[N, 3, H, W]`.
        expected: String,
        /// The shape it was given.
        got: String,
    },
    /// A model or layer specification is invalid.
    #[error("invalid model spec: {0}")]
    Spec(String),
    /// `backward` was called without a preceding training-mode `forward`.
    #[error("{layer}: backward called without a training-mode forward before it")]
    NoForwardCache {
        /// Name of the layer.
        layer: String,
    },
    /// An operation was asked for something it does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A state dict does not fit the model it is loaded into.
    #[error("state mismatch: {0}")]
    State(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data, checkpoint or model file is malformed (bad magic, truncated, wrong count, ...).
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it, in a few words.
        reason: String,
    },
    /// A dataset is not available locally; the message says how to obtain it.
    #[error("{0}")]
    DataMissing(String),
    /// Training produced a NaN or infinite loss or gradient; nothing was updated.
    #[error("non-finite {what} at epoch {epoch}, batch {batch}; stopped, the last good checkpoint is kept")]
    NonFinite {
        /// What went non-finite, e.g. `loss (NaN)` or `gradient of conv1.weight`.
        what: String,
        /// 1-based epoch.
        epoch: usize,
        /// 0-based batch index within the epoch.
        batch: usize,
    },
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// A [`Error::ShapeMismatch`] with `Debug`-formatted shapes.
    pub fn shape(layer: &str, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::ShapeMismatch {
            layer: layer.to_string(),
            expected: expected.into(),
            got: format!("{got:?}"),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::BadFile`] for `path`.
    pub fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
