//! Synchronized batch normalization: the statistics and the statistics-gradient terms of
//! [`crate::kernels::bn`] taken over the union of all ranks' batches.
//!
//! Forward: each rank computes its own channel mean `μ_r` and biased variance `σ²_r` over its
//! `m_r` values; [`reduce_stats`] combines them exactly as a single process would see the
//! concatenated batch: `μ = Σ m_r μ_r / M`, `σ² = Σ m_r (σ²_r + (μ_r − μ)²) / M`, `M = Σ m_r`
//! (two rounds, so the variance never comes from a cancelling `E[x²] − μ²`).
//!
//! Backward (batch statistics, `x̂ = (x − μ)·r`): `dx = γ·r·(dy − ΣΣdy/M − x̂·ΣΣdy·x̂/M)` where
//! the double sums run over all ranks. The layer runs the fixed-statistics kernel (giving
//! `γ·r·dy` and this rank's `Σdy`, `Σdy·x̂`), then [`finish_backward`] sums those over ranks
//! and adds the two remaining terms. The parameter gradients stay this rank's own sums; the
//! data-parallel driver averages them with every other gradient.
//!
//! Scale convention: every rank back-propagates `N·b_r/B` times its own mean loss (see
//! [`crate::train::data_parallel`]), so `Σ_r dy_r` is `N` times the global loss's gradient and
//! the result matches the single-process gradient of the global batch after averaging.

use super::Collective;
use crate::kernels::bn::BnDims;
use rayon::prelude::*;

/// Replaces this rank's batch `mean` and biased `var` (over `count` values per channel) with
/// those of all ranks' values together, and returns the total count `M`.
pub fn reduce_stats(c: &dyn Collective, count: usize, mean: &mut [f32], var: &mut [f32]) -> usize {
    let ch = mean.len();
    let m = count as f64;
    let mut first: Vec<f64> = mean.iter().map(|&mu| m * mu as f64).collect();
    first.push(m);
    c.allreduce_sum_f64(&mut first);
    let total = first[ch];
    let global_mean: Vec<f64> = first[..ch].iter().map(|s| s / total).collect();
    let mut second: Vec<f64> = (0..ch)
        .map(|i| {
            let d = mean[i] as f64 - global_mean[i];
            m * (var[i] as f64 + d * d)
        })
        .collect();
    c.allreduce_sum_f64(&mut second);
    for i in 0..ch {
        mean[i] = global_mean[i] as f32;
        var[i] = (second[i] / total) as f32;
    }
    total as usize
}

/// Completes a synchronized backward. On entry `dx` holds `γ·r·dy` and `dgamma`, `dbeta` hold
/// this rank's `Σdy·x̂`, `Σdy` per channel (the fixed-statistics kernel's outputs, computed
/// with the global `mean`/`invstd`); `total` is the global count `M` from [`reduce_stats`].
/// Adds `−γ·r·(x̂·ΣΣdy·x̂ + ΣΣdy)/M` to `dx`.
///
/// # Panics
/// If a slice length disagrees with `d`.
#[allow(clippy::too_many_arguments)]
pub fn finish_backward(
    c: &dyn Collective,
    x: &[f32],
    dx: &mut [f32],
    d: BnDims,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    dgamma: &[f32],
    dbeta: &[f32],
    total: usize,
) {
    let ch = d.c;
    assert!(
        x.len() == d.len()
            && dx.len() == d.len()
            && [
                mean.len(),
                invstd.len(),
                gamma.len(),
                dgamma.len(),
                dbeta.len()
            ]
            .iter()
            .all(|&l| l == ch),
        "sync batch-norm backward: slice lengths do not match {d:?}"
    );
    let mut sums: Vec<f64> = dgamma.iter().chain(dbeta).map(|&v| v as f64).collect();
    c.allreduce_sum_f64(&mut sums);
    let m = total as f64;
    // dx += b·(x − μ) + c per channel, as in the single-process kernel.
    let coef: Vec<(f32, f32)> = (0..ch)
        .map(|i| {
            let r = invstd[i] as f64;
            let a = gamma[i] as f64 * r;
            (
                (-a * r * sums[i] / m) as f32,
                (-a * sums[ch + i] / m) as f32,
            )
        })
        .collect();
    if d.is_empty() {
        return;
    }
    dx.par_chunks_mut(d.hw)
        .zip(x.par_chunks(d.hw))
        .enumerate()
        .with_min_len((16 * 1024usize).div_ceil(d.hw))
        .for_each(|(plane, (g, xp))| {
            let k = plane % ch;
            let ((b, cc), mu) = (coef[k], mean[k]);
            for (g, &xv) in g.iter_mut().zip(xp) {
                *g += (xv - mu).mul_add(b, cc);
            }
        });
}
