//! Export to the `mpsnn-micro` runtime: folding, quantization and the blob writer.
//!
//! [`export_model`] turns a spec and its state dict into a blob (format: `docs/blob-format.md`)
//! that [`mpsnn_micro::Model`] runs on a microcontroller or on the host ([`infer()`]). All the
//! checking and constant folding happens here (eval-mode BatchNorm into the preceding
//! conv/linear, each LIF layer's TrSG output scale θ into its consumers, average pools into the
//! following conv/linear, max-pools of spikes into an OR), so the device only executes.
//! Constructs the runtime cannot express fail with an error naming the layer.
//!
//! ```no_run
//! # fn demo(spec: &mpsnn::nn::ModelSpec, state: &mpsnn::nn::StateDict) -> mpsnn::Result<()> {
//! use mpsnn::export::{export_model, ExportOptions};
//! let opts = ExportOptions { int8: true, ..ExportOptions::mnist() };
//! let exported = export_model(spec, state, 4, &opts)?;
//! println!("{}", exported.report);
//! std::fs::write("model.mpsnn", &exported.blob).unwrap();
//! # Ok(()) }
//! ```

pub mod compile;
pub mod infer;
pub mod ir;
pub mod reference;
pub mod write;

use crate::error::Result;
use crate::nn::{ModelSpec, StateDict};
use std::fmt;

pub use infer::{infer, infer_tensor, infer_u8, HostRun, InferSummary};

/// How to export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOptions {
    /// Quantize conv/linear weights to int8 (symmetric, one scale per output channel; i32
    /// accumulation over spikes). Thresholds, membranes and biases stay f32.
    pub int8: bool,
    /// Per-channel mean of the normalized input, `x = (raw / u8_div − mean) / std`, stored so
    /// the device can feed raw `u8` values.
    pub input_mean: Vec<f32>,
    /// Per-channel standard deviation of the input normalization.
    pub input_std: Vec<f32>,
    /// Divisor of raw inputs (255 for 8-bit pixels, 1 for event counts).
    pub u8_div: f32,
}

impl ExportOptions {
    /// f32 export with MNIST's normalization (mean 0.1307, std 0.3081, pixels / 255).
    pub fn mnist() -> Self {
        ExportOptions {
            int8: false,
            input_mean: vec![0.1307],
            input_std: vec![0.3081],
            u8_div: 255.0,
        }
    }

    /// f32 export with the normalization the data pipeline applies to `dataset` (mean/std of
    /// pixel/255 for images; none, `x = count`, for event frames).
    pub fn for_dataset(dataset: crate::data::DatasetName) -> Self {
        match dataset.normalization() {
            Some((mean, std)) => ExportOptions {
                int8: false,
                input_mean: mean.to_vec(),
                input_std: std.to_vec(),
                u8_div: 255.0,
            },
            None => ExportOptions::identity(dataset.sample_shape()[0]),
        }
    }

    /// f32 export with no normalization (`x = raw`) for `channels` input channels.
    pub fn identity(channels: usize) -> Self {
        ExportOptions {
            int8: false,
            input_mean: vec![0.0; channels],
            input_std: vec![1.0; channels],
            u8_div: 1.0,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportReport {
    /// Model name.
    pub model: String,
    /// Timesteps.
    pub timesteps: usize,
    /// int8 or f32 weights.
    pub int8: bool,
    /// Size of the blob in bytes.
    pub blob_bytes: usize,
    /// Bytes of weights, scales, biases and LIF constants.
    pub weight_bytes: usize,
    /// Bytes of scratch RAM the runtime needs per inference (bit-packed spike maps).
    pub scratch_bytes: usize,
    /// LIF layers, max-pools and the readout, as the runtime executes them.
    pub ops: usize,
    /// LIF layers among them.
    pub lif_layers: usize,
    /// Every fold performed, one line each.
    pub foldings: Vec<String>,
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "exported {} (T = {}, {} weights): {} bytes total, {} bytes of weights, {} bytes of scratch RAM",
            self.model,
            self.timesteps,
            if self.int8 { "int8" } else { "f32" },
            self.blob_bytes,
            self.weight_bytes,
            self.scratch_bytes
        )?;
        writeln!(
            f,
            "{} runtime layers ({} LIF, {} other)",
            self.ops,
            self.lif_layers,
            self.ops - self.lif_layers
        )?;
        writeln!(f, "folding:")?;
        for line in &self.foldings {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// A blob and its report.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    /// The bytes to write to `model.mpsnn` (or embed in firmware).
    pub blob: Vec<u8>,
    /// What was written.
    pub report: ExportReport,
}

/// Exports `spec` with parameters `state` (an eval-ready state dict: BN running statistics and
/// MP-Init μ included) for `timesteps` steps per sample.
///
/// Errors: missing or misshapen tensors ([`crate::Error::State`]), constructs the runtime cannot
/// run ([`crate::Error::Unsupported`], naming the layer), bad options.
pub fn export_model(
    spec: &ModelSpec,
    state: &StateDict,
    timesteps: usize,
    opts: &ExportOptions,
) -> Result<Exported> {
    let program = compile::compile(spec, state, timesteps)?;
    let layout = write::Layout {
        int8: opts.int8,
        mean: &opts.input_mean,
        std: &opts.input_std,
        u8_div: opts.u8_div,
    };
    let (blob, sizes) = write::write(&program, &layout)?;
    let mut foldings = program.foldings.clone();
    if opts.int8 {
        foldings.push(
            "conv/linear weights → int8, symmetric per output channel (i32 accumulation)".into(),
        );
    }
    let lif_layers = program
        .ops
        .iter()
        .filter(|o| matches!(o, ir::Op::Neuron { .. }))
        .count();
    let report = ExportReport {
        model: spec.name.clone(),
        timesteps,
        int8: opts.int8,
        blob_bytes: sizes.blob,
        weight_bytes: sizes.params,
        scratch_bytes: sizes.scratch,
        ops: program.ops.len(),
        lif_layers,
        foldings,
    };
    Ok(Exported { blob, report })
}
