//! Host-side inference with `mpsnn-micro` (what `mpsnn infer` runs).

use crate::error::{Error, Result};
use mpsnn_micro::{Input, Model};
use rayon::prelude::*;

/// Predictions and scores of an exported model over a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRun {
    /// Predicted class per sample.
    pub predictions: Vec<usize>,
    /// Class scores (logits averaged over T), `[n, classes]` row-major.
    pub scores: Vec<f32>,
    /// Classes per sample in `scores`.
    pub classes: usize,
}

fn blob_error(e: mpsnn_micro::Error) -> Error {
    Error::InvalidArgument(format!("model blob: {e}"))
}

/// Runs `blob` on `n` samples stored back to back in `inputs` (each [`Model::input_len`]
/// values: normalized f32, like the std network's input; `[T, C, H, W]` per sample for frame
/// models). Samples run in parallel; results do not depend on the thread count.
pub fn infer(blob: &[u8], inputs: &[f32], n: usize) -> Result<HostRun> {
    run_all(blob, n, inputs.len(), |m, i| {
        Input::F32(&inputs[i * m..(i + 1) * m])
    })
}

/// Runs `blob` on a batch as the data loader produces it: `[B, C, H, W]` normalized images
/// for direct encoding, `[T·B, C, H, W]` time-major frames for frame encoding.
pub fn infer_tensor(blob: &[u8], input: &crate::Tensor) -> Result<HostRun> {
    let model = Model::parse(blob).map_err(blob_error)?;
    let rows = input.shape().first().copied().unwrap_or(0);
    match model.encoding() {
        mpsnn_micro::Encoding::Direct => infer(blob, input.data(), rows),
        mpsnn_micro::Encoding::Frames => {
            let t = model.timesteps();
            if rows % t != 0 {
                return Err(Error::shape(
                    "infer",
                    format!("[T·B, C, H, W] with T = {t}"),
                    input.shape(),
                ));
            }
            let b = rows / t;
            let per = input.len() / rows.max(1);
            let x = input.data();
            let sample_major: Vec<f32> = (0..b)
                .flat_map(|i| {
                    (0..t).flat_map(move |k| {
                        x[(k * b + i) * per..(k * b + i + 1) * per].iter().copied()
                    })
                })
                .collect();
            infer(blob, &sample_major, b)
        }
    }
}

/// Like [`infer`] on raw inputs (e.g. `u8` pixels), normalized by the constants in the blob
/// exactly as on the device.
pub fn infer_u8(blob: &[u8], inputs: &[u8], n: usize) -> Result<HostRun> {
    run_all(blob, n, inputs.len(), |m, i| {
        Input::U8(&inputs[i * m..(i + 1) * m])
    })
}

fn run_all<'x>(
    blob: &[u8],
    n: usize,
    len: usize,
    input: impl Fn(usize, usize) -> Input<'x> + Sync,
) -> Result<HostRun> {
    let model = Model::parse(blob).map_err(blob_error)?;
    let m = model.input_len();
    if len != n * m {
        return Err(Error::InvalidArgument(format!(
            "{n} samples need {} input values, got {len}",
            n * m
        )));
    }
    let classes = model.classes();
    let results: Vec<(usize, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map_init(
            || vec![0u32; model.scratch_words()],
            |scratch, i| {
                let mut scores = vec![0.0; classes];
                let p = model
                    .run(input(m, i), scratch, &mut scores)
                    .map_err(blob_error)?;
                Ok((p, scores))
            },
        )
        .collect::<Result<_>>()?;
    let (predictions, scores): (Vec<usize>, Vec<Vec<f32>>) = results.into_iter().unzip();
    Ok(HostRun {
        predictions,
        scores: scores.concat(),
        classes,
    })
}

/// The summary `mpsnn infer` prints as its last line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InferSummary {
    /// Fraction of samples predicted correctly.
    pub accuracy: f64,
    /// Fraction of samples whose prediction equals the std network's (`mpsnn eval`).
    pub agreement_with_eval: f64,
    /// Samples.
    pub n: usize,
}

impl InferSummary {
    /// Compares `predictions` with `labels` and with the std network's `eval_predictions`.
    pub fn new(
        predictions: &[usize],
        labels: &[usize],
        eval_predictions: &[usize],
    ) -> Result<Self> {
        let n = predictions.len();
        if labels.len() != n || eval_predictions.len() != n || n == 0 {
            return Err(Error::InvalidArgument(format!(
                "infer summary: {n} predictions, {} labels, {} eval predictions",
                labels.len(),
                eval_predictions.len()
            )));
        }
        let frac = |other: &[usize]| {
            predictions
                .iter()
                .zip(other)
                .filter(|(a, b)| a == b)
                .count() as f64
                / n as f64
        };
        Ok(InferSummary {
            accuracy: frac(labels),
            agreement_with_eval: frac(eval_predictions),
            n,
        })
    }

    /// One JSON object: `{"accuracy": …, "agreement_with_eval": …, "n": …}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({"accuracy": self.accuracy, "agreement_with_eval": self.agreement_with_eval, "n": self.n}).to_string()
    }
}
