//! The LIF neuron's one-timestep update, mirroring `mpsnn`'s eval forward (METHOD.md §1).
//!
//! Symbols: `U` membrane potential after reset, `M` after integration, `I` input current,
//! `λ = 1/τ` leak factor, `θ` threshold, `μ` the MP-Init potential (`U[0] = μ`). The runtime sees
//! binary spikes `S`; the std network's `θ·S` output scale is folded into the consumers at export.

/// How the membrane resets after a spike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// `U = M − θ·S`.
    Soft,
    /// `U = M·(1 − S)`.
    Hard,
}

/// One LIF layer's constants (per layer, shared by all its neurons).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifParams {
    /// Leak factor `λ = sigmoid(w) = 1/τ`, in `(0, 1]`.
    pub lambda: f32,
    /// `1 − λ`, stored separately because the std layer rounds `sigmoid(−w)` to f32 rather
    /// than computing `1 − λ` in f32 (the two can differ in the last bit).
    pub one_minus_lambda: f32,
    /// Threshold `θ = softplus(k) > 0`.
    pub theta: f32,
    /// MP-Init potential `μ`: every neuron starts at `U[0] = μ`.
    pub mu: f32,
    /// Reset rule.
    pub reset: Reset,
}

/// One timestep: returns `(U[t], S[t])` from `U[t−1]` and `I[t]`.
///
/// `M = (1−λ)·U + λ·I` (METHOD.md decision 1; the operation order and constants of
/// `mpsnn::neuron::step`),
/// `S = [M ≥ θ]` (decision 2), then the reset.
///
/// ```
/// use mpsnn_micro::lif::{step, LifParams, Reset};
/// let p = LifParams { lambda: 0.5, one_minus_lambda: 0.5, theta: 1.0, mu: 0.3, reset: Reset::Soft };
/// let (u, s) = step(&p, p.mu, 1.2);          // M = 0.15 + 0.6 = 0.75 < θ
/// assert!(!s && (u - 0.75).abs() < 1e-7);
/// ```
#[inline(always)]
pub fn step(p: &LifParams, u: f32, i: f32) -> (f32, bool) {
    let m = p.one_minus_lambda * u + p.lambda * i;
    let s = m >= p.theta;
    let u = match (s, p.reset) {
        (false, _) => m,
        (true, Reset::Soft) => m - p.theta,
        (true, Reset::Hard) => 0.0,
    };
    (u, s)
}

/// Runs `currents.len()` steps from `U[0] = μ`; bit `t` of the result is `S[t]`.
///
/// `currents.len()` must be at most 32; later entries are ignored.
///
/// ```
/// use mpsnn_micro::lif::{run, LifParams, Reset};
/// // METHOD.md §3.4 worked vector: θ = 1, τ = 2, μ = 0.3, spikes only at t = 2.
/// let p = LifParams { lambda: 0.5, one_minus_lambda: 0.5, theta: 1.0, mu: 0.3, reset: Reset::Soft };
/// assert_eq!(run(&p, &[1.2, 0.4, 1.6, 0.9]), 0b0100);
/// ```
#[inline]
pub fn run(p: &LifParams, currents: &[f32]) -> u32 {
    let mut u = p.mu;
    let mut bits = 0u32;
    for (t, &i) in currents.iter().take(32).enumerate() {
        let (next, s) = step(p, u, i);
        u = next;
        bits |= u32::from(s) << t;
    }
    bits
}
