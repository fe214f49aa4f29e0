//! MP-Init (METHOD.md §4, Project decision 4): every neuron of a layer starts each batch at
//! `U[0]` = μ, and after each training forward
//! `μ ← 0.9·μ + 0.1·mean(U[T] over neurons that spiked at least once)`, with the mean taken as
//! `Σ / max(count, 1)` so a silent batch contributes 0 (μ ← 0.9·μ), as in the authors' code.
//! μ has no gradient, is frozen in eval, and is saved with the model.

/// Weight of the old μ in the running mean (the code's and thesis' β = 0.9; METHOD.md §4.1).
pub const MOMENTUM: f64 = 0.9;

/// The initial potential `U[0]` for a layer: μ when MP-Init is on, else 0.
pub fn initial_potential(enabled: bool, mu: f32) -> f32 {
    if enabled {
        mu
    } else {
        0.0
    }
}

/// The batch statistic: mean `U[T]` over active neurons, `sum_u_active / max(active, 1)`.
pub fn batch_mean(sum_u_active: f64, active: u64) -> f64 {
    sum_u_active / active.max(1) as f64
}

/// μ after one training batch whose active neurons (≥ 1 spike) sum to `sum_u_active` over
/// `active` of them.
///
/// ```
/// use mpsnn::neuron::mp_init::update;
/// assert_eq!(update(0.5, 0.0, 0), 0.45);          // silent batch: μ ← 0.9·μ
/// assert!((update(0.0, 3.0, 4) - 0.075).abs() < 1e-7);
/// ```
pub fn update(mu: f32, sum_u_active: f64, active: u64) -> f32 {
    (MOMENTUM * mu as f64 + (1.0 - MOMENTUM) * batch_mean(sum_u_active, active)) as f32
}
