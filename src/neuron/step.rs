//! One LIF timestep, forward and backward, as pure functions (STYLE.md #8). The fused kernels
//! (`crate::kernels::lif`) and the scalar reference call exactly these, on `f32x16`, `f32x8` and `f32`
//! lanes; the `no_std` micro runtime mirrors [`step`] on `f32`.
//!
//! Forward (METHOD.md §1.1, Project decisions 1–2), per neuron:
//! ```text
//! M[t] = (1 − λ)·U[t−1] + λ·I[t]           charge; U[0] = μ (MP-Init) or 0
//! S[t] = 1[M[t] ≥ θ]                        same rule in training and eval
//! O[t] = θ·S[t] (TrSG)  or  S[t] (AS, RS)
//! U[t] = M[t] − θ·S[t] (soft)  or  M[t]·(1 − S[t]) (hard)
//! ```
//! Backward (METHOD.md §3.4, reverse time, `g_U` = `∂L/∂U[t]` from step t+1, 0 at t = T):
//! ```text
//! g_M     = g_O·∂O/∂M + g_U·∂U/∂M
//! g_θ    += g_O·∂O/∂θ + g_U·∂U/∂θ
//! g_I[t]  = λ·g_M
//! g_U     ← (1 − λ)·g_M                     ∂L/∂U[t−1]
//! g_decay += g_M·(M[t] − U[t−1])            = λ·g_M·(I[t] − U[t−1]), the λ-path
//! ∂L/∂k = g_θ·sigmoid(k) ;  ∂L/∂w = g_λ·λ(1−λ) = (1 − λ)·g_decay
//! ```
//! Writing the λ-path with `M − U_prev = λ·(I − U_prev)` lets backward run from the cached M
//! alone (the input I is not kept), and cancels λ so nothing is divided by it.

use super::lane::Lane;
use super::params::Derived;
use super::surrogate::{Reset, Surrogate, SurrogateKind, SurrogateShape};

/// The per-layer constants of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepParams {
    /// Threshold θ (V_thr), > 0.
    pub theta: f32,
    /// 1/θ, precomputed (the relative surrogates use `M·(1/θ)`).
    pub inv_theta: f32,
    /// Decay λ = 1/τ ∈ (0, 1).
    pub lambda: f32,
    /// 1 − λ.
    pub one_minus_lambda: f32,
    /// The value of an emitted spike: θ for TrSG, 1 for AS/RS.
    pub out_scale: f32,
    /// Reset rule.
    pub reset: Reset,
    /// Surrogate (backward only).
    pub surrogate: Surrogate,
}

impl StepParams {
    /// The step constants for derived scalars `d` and a surrogate/reset configuration.
    pub fn new(d: &Derived, surrogate: Surrogate, reset: Reset) -> Self {
        StepParams {
            theta: d.theta,
            inv_theta: 1.0 / d.theta,
            lambda: d.lambda,
            one_minus_lambda: d.one_minus_lambda,
            out_scale: match surrogate.kind() {
                SurrogateKind::Trsg => d.theta,
                SurrogateKind::As | SurrogateKind::Rs => 1.0,
            },
            reset,
            surrogate,
        }
    }
}

impl StepParams {
    /// The same parameters with the configuration replaced by `kind`, `shape`, `reset` (see
    /// [`Surrogate::with_kind_shape`]); the fused kernels specialise their loops with it.
    #[inline(always)]
    pub fn specialized(&self, kind: SurrogateKind, shape: SurrogateShape, reset: Reset) -> Self {
        StepParams {
            reset,
            surrogate: self.surrogate.with_kind_shape(kind, shape),
            ..*self
        }
    }
}

/// The result of one forward step.
#[derive(Clone, Copy, Debug)]
pub struct StepOut<L: Lane> {
    /// Pre-spike membrane potential `M[t]`.
    pub m: L,
    /// Spike `S[t]`.
    pub s: L::Mask,
    /// Output `O[t]` (`out_scale` or 0).
    pub o: L,
    /// Post-reset potential `U[t]`.
    pub u: L,
}

/// One forward step from post-reset potential `u_prev` = `U[t−1]` and input `i` = `I[t]`.
#[inline(always)]
pub fn step<L: Lane>(p: &StepParams, u_prev: L, i: L) -> StepOut<L> {
    let m = L::splat(p.one_minus_lambda) * u_prev + L::splat(p.lambda) * i;
    let s = m.ge(L::splat(p.theta));
    StepOut {
        m,
        s,
        o: L::keep(s, L::splat(p.out_scale)),
        u: reset(p, m, s),
    }
}

/// The post-reset potential U from M and S: `M − θ·S` (soft) or `M·(1 − S)` (hard). Backward
/// recomputes `U[t−1]` with this, bit-identical to the forward's value.
#[inline(always)]
pub fn reset<L: Lane>(p: &StepParams, m: L, s: L::Mask) -> L {
    match p.reset {
        Reset::Soft => m - L::keep(s, L::splat(p.theta)),
        Reset::Hard => L::select(s, L::splat(0.0), m),
    }
}

/// The gradients produced by one backward step.
#[derive(Clone, Copy, Debug)]
pub struct StepGrads<L> {
    /// `∂L/∂I[t]`.
    pub g_i: L,
    /// `∂L/∂U[t−1]`, carried to step t−1.
    pub g_u_prev: L,
    /// This step's contribution to ∂L/∂θ.
    pub g_theta: L,
    /// This step's contribution to `g_decay` (∂L/∂w = (1 − λ)·Σ g_decay).
    pub g_decay: L,
}

/// One backward step at time t: `u_prev` = `U[t−1]`, `m` = `M[t]`, `s` = `S[t]`, `g_o` = `∂L/∂O[t]`,
/// `g_u` = `∂L/∂U[t]` (from the later steps). See the module docs for the recursion.
#[inline(always)]
pub fn step_backward<L: Lane>(
    p: &StepParams,
    u_prev: L,
    m: L,
    s: L::Mask,
    g_o: L,
    g_u: L,
) -> StepGrads<L> {
    let d = p.surrogate.partials(p.reset, p.theta, p.inv_theta, m, s);
    let g_m = g_o * d.do_dm + g_u * d.du_dm;
    StepGrads {
        g_i: L::splat(p.lambda) * g_m,
        g_u_prev: L::splat(p.one_minus_lambda) * g_m,
        g_theta: g_o * d.do_dth + g_u * d.du_dth,
        g_decay: g_m * (m - u_prev),
    }
}
