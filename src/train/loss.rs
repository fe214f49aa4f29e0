//! Losses over time-major logits `[T·B, classes]` (row `t·B + b`).
//!
//! - [`Loss::MeanCe`] (the paper's, METHOD.md §5): cross-entropy of the mean over `T` of the
//!   logits, averaged over the batch.
//! - [`Loss::Tet`] (Deng et al., 2022): the mean over `t` of the per-timestep cross-entropies,
//!   plus `λ·MSE(logits_t, φ)` with φ = 1 when `lambda > 0`.
//!
//! Both return the loss and `∂L/∂logits` in one pass; softmax is computed with max subtraction
//! in f64, so large logits cannot overflow.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Which loss to train with.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Loss {
    /// Cross-entropy of the mean-over-T logits.
    MeanCe,
    /// Temporal efficient training: mean over t of CE(logits_t) + λ·MSE(logits_t, 1).
    Tet {
        /// Weight of the MSE regularizer (0 disables it).
        lambda: f32,
    },
}

/// Loss value and gradient for one batch.
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar loss (mean over the batch).
    pub loss: f32,
    /// `∂L/∂logits`, same shape as the logits.
    pub grad: Tensor,
}

/// Splits `[T·B, K]` into `(B, K)` and checks the shape.
fn dims(logits: &Tensor, labels: &[usize], timesteps: usize) -> Result<(usize, usize)> {
    let s = logits.shape();
    let b = labels.len();
    if s.len() != 2 || b == 0 || timesteps == 0 || s[0] != timesteps * b {
        return Err(Error::shape(
            "loss",
            format!("[T·B, classes] with T = {timesteps}, B = {b}"),
            s,
        ));
    }
    let k = s[1];
    if let Some(&bad) = labels.iter().find(|&&y| y >= k) {
        return Err(Error::InvalidArgument(format!(
            "label {bad} out of range for {k} classes"
        )));
    }
    Ok((b, k))
}

/// Mean over `T` of time-major logits: `[T·B, K] → [B·K]` (row-major), in f64.
pub fn mean_over_time(logits: &Tensor, timesteps: usize) -> Vec<f64> {
    let k = logits.shape()[1];
    let b = logits.shape()[0] / timesteps;
    let mut mean = vec![0f64; b * k];
    for chunk in logits.data().chunks_exact(b * k) {
        for (m, &v) in mean.iter_mut().zip(chunk) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= timesteps as f64);
    mean
}

/// `softmax(z) − onehot(y)` and `−log softmax(z)[y]` for one row.
fn ce_row(z: &[f64], y: usize, grad: &mut [f64]) -> f64 {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
    for (g, v) in grad.iter_mut().zip(z) {
        *g = (v - max).exp() / sum;
    }
    grad[y] -= 1.0;
    sum.ln() + max - z[y]
}

impl Loss {
    /// Loss and gradient of `logits` `[T·B, K]` against `labels` (length `B`).
    pub fn compute(
        &self,
        logits: &Tensor,
        labels: &[usize],
        timesteps: usize,
    ) -> Result<LossOutput> {
        let (b, k) = dims(logits, labels, timesteps)?;
        let t = timesteps;
        let mut grad = vec![0f32; t * b * k];
        let mut row_grad = vec![0f64; k];
        let mut total = 0f64;
        match *self {
            Loss::MeanCe => {
                let mean = mean_over_time(logits, t);
                for (i, &y) in labels.iter().enumerate() {
                    total += ce_row(&mean[i * k..(i + 1) * k], y, &mut row_grad);
                    // d mean / d logits_t = 1/T; the batch mean adds 1/B.
                    for step in 0..t {
                        let g = &mut grad[(step * b + i) * k..(step * b + i + 1) * k];
                        for (gi, rg) in g.iter_mut().zip(&row_grad) {
                            *gi = (rg / (t * b) as f64) as f32;
                        }
                    }
                }
            }
            Loss::Tet { lambda } => {
                let lambda = lambda as f64;
                let mut z = vec![0f64; k];
                for step in 0..t {
                    for (i, &y) in labels.iter().enumerate() {
                        let row = (step * b + i) * k;
                        for (zi, &v) in z.iter_mut().zip(&logits.data()[row..row + k]) {
                            *zi = v as f64;
                        }
                        let ce = ce_row(&z, y, &mut row_grad);
                        let mse: f64 = z.iter().map(|v| (v - 1.0).powi(2)).sum::<f64>() / k as f64;
                        total += (1.0 - lambda) * ce + lambda * mse;
                        let scale = 1.0 / (t * b) as f64;
                        for j in 0..k {
                            let d = (1.0 - lambda) * row_grad[j]
                                + lambda * 2.0 * (z[j] - 1.0) / k as f64;
                            grad[row + j] = (d * scale) as f32;
                        }
                    }
                }
                total /= t as f64;
            }
        }
        Ok(LossOutput {
            loss: (total / b as f64) as f32,
            grad: Tensor::from_vec(logits.shape(), grad)?,
        })
    }
}

/// Predicted class per sample from the mean over the first `upto` timesteps (`upto ≤ T`):
/// the paper's "accuracy at timestep t" uses the cumulative mean of the first `t` outputs.
pub fn predict_upto(logits: &Tensor, batch: usize, timesteps: usize, upto: usize) -> Vec<usize> {
    let k = logits.shape()[1];
    let d = logits.data();
    (0..batch)
        .map(|i| {
            let mut acc = vec![0f64; k];
            for step in 0..upto.min(timesteps) {
                let row = (step * batch + i) * k;
                for (a, &v) in acc.iter_mut().zip(&d[row..row + k]) {
                    *a += v as f64;
                }
            }
            argmax(&acc)
        })
        .collect()
}

/// Index of the largest value (first one on ties).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_logits(t: usize, b: usize, k: usize) -> Tensor {
        let data = (0..t * b * k)
            .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 17.0)
            .collect();
        Tensor::from_vec(&[t * b, k], data).unwrap()
    }

    /// Central differences on every logit.
    fn check_gradient(loss: Loss) {
        let (t, b, k) = (3, 2, 4);
        let logits = random_logits(t, b, k);
        let labels = [1, 3];
        let out = loss.compute(&logits, &labels, t).unwrap();
        for i in 0..logits.len() {
            let eps = 1e-2f32;
            let mut plus = logits.clone();
            plus.data_mut()[i] += eps;
            let mut minus = logits.clone();
            minus.data_mut()[i] -= eps;
            let fd = (loss.compute(&plus, &labels, t).unwrap().loss
                - loss.compute(&minus, &labels, t).unwrap().loss)
                / (2.0 * eps);
            let g = out.grad.data()[i];
            assert!(
                (fd - g).abs() < 2e-4,
                "{loss:?} logit {i}: fd {fd} vs analytic {g}"
            );
        }
    }

    #[test]
    fn mean_ce_gradient_matches_finite_differences() {
        check_gradient(Loss::MeanCe);
    }

    #[test]
    fn tet_gradient_matches_finite_differences() {
        check_gradient(Loss::Tet { lambda: 0.0 });
        check_gradient(Loss::Tet { lambda: 0.05 });
    }

    #[test]
    fn mean_ce_known_value_and_huge_logits_stay_finite() {
        // Uniform logits over K classes: loss = ln K.
        let logits = Tensor::zeros(&[2 * 3, 5]);
        let out = Loss::MeanCe.compute(&logits, &[0, 1, 4], 2).unwrap();
        assert!((out.loss - 5f32.ln()).abs() < 1e-6);
        let big = Tensor::from_vec(&[1, 2], vec![1e30, -1e30]).unwrap();
        let out = Loss::MeanCe.compute(&big, &[1], 1).unwrap();
        assert!(out.loss.is_finite() && out.grad.data().iter().all(|g| g.is_finite()));
    }

    #[test]
    fn bad_shapes_and_labels_are_errors() {
        let logits = Tensor::zeros(&[6, 3]);
        assert!(Loss::MeanCe.compute(&logits, &[0, 1], 2).is_err()); // 6 != 2·2
        assert!(Loss::MeanCe.compute(&logits, &[0, 1, 3], 2).is_err()); // label 3 of 3 classes
    }

    #[test]
    fn cumulative_prediction_uses_first_t_steps() {
        // B = 1, K = 2: step 0 favours class 0 slightly, step 1 favours class 1 strongly.
        let logits = Tensor::from_vec(&[2, 2], vec![1.0, 0.0, 0.0, 5.0]).unwrap();
        assert_eq!(predict_upto(&logits, 1, 2, 1), vec![0]);
        assert_eq!(predict_upto(&logits, 1, 2, 2), vec![1]);
    }
}
