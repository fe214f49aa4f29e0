//! The θ/τ parametrisation (METHOD.md §2, Project decision 1): θ = softplus(k), λ = 1/τ =
//! sigmoid(w), with inverses for initialising k, w from θ0, τ0.
//!
//! Everything is evaluated in f64 from the stored f32 raw parameters and rounded once, so the
//! values match the float64 reference to f32 precision and stay finite for any finite k, w
//! (k = −80 gives θ ≈ 1.8e−35, k = 1e6 gives θ = 1e6).

use crate::error::{Error, Result};

/// The smallest threshold the kernels use. Below it 1/θ overflows f32; θ = softplus(k) only gets
/// there for k < −87.3, far outside any trained value.
pub const THETA_FLOOR: f32 = f32::MIN_POSITIVE;

/// `ln(1 + e^x)` without overflow or loss of precision at either end.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The inverse of [`softplus`]: `ln(e^y − 1)` for `y > 0`, stable for tiny and huge `y`.
pub fn softplus_inv(y: f64) -> f64 {
    if y > 20.0 {
        // ln(e^y − 1) = y + ln(1 − e^−y)
        y + (-(-y).exp()).ln_1p()
    } else {
        y.exp_m1().ln()
    }
}

/// `1 / (1 + e^−x)` without overflow at either end.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The raw parameter `k` with `softplus(k) = theta0` (METHOD.md §1.2: k0 = ln(e^θ0 − 1)).
pub fn k_from_theta(theta0: f32) -> Result<f32> {
    if !(theta0.is_finite() && theta0 > 0.0) {
        return Err(Error::Spec(format!(
            "LIF theta0 must be finite and > 0, got {theta0}"
        )));
    }
    Ok(softplus_inv(theta0 as f64) as f32)
}

/// The raw parameter `w` with `1/sigmoid(w) = tau0` (METHOD.md §1.2: w0 = −ln(τ0 − 1)).
pub fn w_from_tau(tau0: f32) -> Result<f32> {
    if !(tau0.is_finite() && tau0 > 1.0) {
        return Err(Error::Spec(format!(
            "LIF tau0 must be finite and > 1, got {tau0}"
        )));
    }
    Ok(-((tau0 as f64) - 1.0).ln() as f32)
}

/// The neuron scalars derived from the raw parameters, with the chain-rule factors back to them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Derived {
    /// Threshold θ = softplus(k), floored at [`THETA_FLOOR`].
    pub theta: f32,
    /// Decay λ = 1/τ = sigmoid(w).
    pub lambda: f32,
    /// 1 − λ = sigmoid(−w), computed directly so it keeps full precision when λ → 1.
    pub one_minus_lambda: f32,
    /// ∂θ/∂k = sigmoid(k), in f64.
    pub dtheta_dk: f64,
    /// 1 − λ in f64: ∂L/∂w = (1 − λ)·Σ g_M·(M − U_prev) (see `crate::neuron::step`).
    pub one_minus_lambda_f64: f64,
}

impl Derived {
    /// θ, λ and the chain-rule factors from raw `k`, `w`.
    pub fn from_raw(k: f32, w: f32) -> Derived {
        let (k, w) = (k as f64, w as f64);
        Derived {
            theta: (softplus(k) as f32).max(THETA_FLOOR),
            lambda: sigmoid(w) as f32,
            one_minus_lambda: sigmoid(-w) as f32,
            dtheta_dk: sigmoid(k),
            one_minus_lambda_f64: sigmoid(-w),
        }
    }

    /// The membrane time constant τ = 1/λ.
    pub fn tau(&self) -> f64 {
        1.0 / self.lambda as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverses_round_trip_and_match_the_reference_init() {
        // METHOD.md §1.2: θ0 = 1 → k0 ≈ 0.5413; τ0 = 2 → w0 = 0.
        assert!((softplus_inv(1.0) - 0.541_324_854_612_918_1).abs() < 1e-15);
        assert_eq!(w_from_tau(2.0).unwrap(), 0.0);
        for theta in [1e-30, 1e-6, 0.1, 0.5, 1.0, 2.0, 19.9, 20.1, 1e3, 1e6] {
            let back = softplus(softplus_inv(theta));
            assert!((back - theta).abs() <= 1e-12 * theta, "θ = {theta}: {back}");
        }
        for tau in [1.0001f32, 1.5, 2.0, 3.0, 100.0] {
            let d = Derived::from_raw(0.0, w_from_tau(tau).unwrap());
            assert!(
                (d.tau() - tau as f64).abs() < 1e-5 * tau as f64,
                "τ = {tau}"
            );
        }
    }

    #[test]
    fn extreme_raw_values_stay_finite() {
        let d = Derived::from_raw(-80.0, -80.0);
        assert!((d.theta as f64 - (-80f64).exp()).abs() < 1e-6 * (-80f64).exp());
        assert!(d.lambda > 0.0 && d.one_minus_lambda == 1.0);
        assert!(d.dtheta_dk > 0.0);
        let d = Derived::from_raw(1e6, 80.0);
        assert_eq!(d.theta, 1e6);
        assert!(d.one_minus_lambda > 0.0 && d.lambda == 1.0);
        assert_eq!(Derived::from_raw(-200.0, 0.0).theta, THETA_FLOOR);
        assert_eq!(softplus(1e308), 1e308);
        assert_eq!(sigmoid(-1e308), 0.0);
    }

    #[test]
    fn bad_initial_values_are_spec_errors() {
        assert!(k_from_theta(0.0).is_err());
        assert!(k_from_theta(f32::NAN).is_err());
        assert!(w_from_tau(1.0).is_err());
        assert!(w_from_tau(f32::INFINITY).is_err());
    }
}
