//! The surrogate-gradient family (METHOD.md §3): three ways to place the window (AS-SG, RS-SG,
//! TrSG) times four window shapes, plus the local partial derivatives of one LIF step that the
//! BPTT recursion (`crate::neuron::step`) chains together.
//!
//! Notation (METHOD.md §3.1): the spike is `S = H(x)` with `x = M − θ` (AS) or `x = M/θ − 1`
//! (RS, TrSG); the backward pass replaces `H′` with the shape's `f′(x)`. The forward spike rule
//! never uses `x`: every family fires iff `M >= θ` (Project decision 2).

use super::lane::Lane;
use crate::error::{Error, Result};
pub use crate::nn::spec::{Reset, SurrogateKind, SurrogateShape};

/// `|M/θ|` is clamped to this before the surrogate sees it. Beyond it every shape is already at
/// its asymptote, and the clamp keeps `f′(x)·(M/θ)²` from forming `0·∞` (NaN) when θ is tiny.
const RATIO_LIMIT: f32 = 1e18;

/// A surrogate family and shape with its width γ, and the constants derived from γ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Surrogate {
    kind: SurrogateKind,
    shape: SurrogateShape,
    gamma: f32,
    half_gamma: f32,
    inv_gamma: f32,
    inv_gamma2: f32,
    atan_peak: f32,
    atan_slope: f32,
}

impl Surrogate {
    /// A surrogate with width `gamma` (finite, > 0).
    pub fn new(kind: SurrogateKind, shape: SurrogateShape, gamma: f32) -> Result<Self> {
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(Error::Spec(format!(
                "surrogate gamma must be finite and > 0, got {gamma}"
            )));
        }
        let g = gamma as f64;
        Ok(Surrogate {
            kind,
            shape,
            gamma,
            half_gamma: (g / 2.0) as f32,
            inv_gamma: (1.0 / g) as f32,
            inv_gamma2: (1.0 / (g * g)) as f32,
            atan_peak: (g / 2.0) as f32,
            atan_slope: (std::f64::consts::FRAC_PI_2 * g) as f32,
        })
    }

    /// The same surrogate with `kind` and `shape` replaced (γ kept). Kernels call it with
    /// literal arguments so that, once inlined, the dispatch in [`Surrogate::derivative`] and
    /// [`Surrogate::partials`] folds away.
    #[inline(always)]
    pub fn with_kind_shape(self, kind: SurrogateKind, shape: SurrogateShape) -> Self {
        Surrogate {
            kind,
            shape,
            ..self
        }
    }

    /// The family.
    pub fn kind(&self) -> SurrogateKind {
        self.kind
    }

    /// The shape.
    pub fn shape(&self) -> SurrogateShape {
        self.shape
    }

    /// The width γ.
    pub fn gamma(&self) -> f32 {
        self.gamma
    }

    /// `f′(x)` of the configured shape (METHOD.md §3.1). Finite and ≥ 0 for every non-NaN `x`,
    /// including ±∞.
    #[inline(always)]
    pub fn derivative<L: Lane>(&self, x: L) -> L {
        let zero = L::splat(0.0);
        match self.shape {
            // f′(x) = (1/γ)·1(|x| ≤ γ/2); inclusive bounds like the authors' clamp (§3.4).
            SurrogateShape::Rect => L::keep(
                x.abs().le(L::splat(self.half_gamma)),
                L::splat(self.inv_gamma),
            ),
            // f′(x) = (1/γ²)·max(0, γ − |x|).
            SurrogateShape::Tri => {
                (L::splat(self.gamma) - x.abs()).max(zero) * L::splat(self.inv_gamma2)
            }
            // f′(x) = γ / (2·(1 + (π/2·γ·x)²)); 1/∞ = 0 at huge |x|.
            SurrogateShape::Atan => {
                let z = L::splat(self.atan_slope) * x;
                L::splat(self.atan_peak) / (L::splat(1.0) + z * z)
            }
            // f′(x) = (1/γ)·σ(z)·(1 − σ(z)), z = x/γ, written as e/(1+e)² with e = e^{−|z|} ≤ 1,
            // so nothing overflows: e → 0 for |z| → ∞ (snnTorch's e^z/(1+e^z)² gives ∞/∞).
            SurrogateShape::Sigmoid => {
                let e = (-(x * L::splat(self.inv_gamma)).abs()).exp();
                let d = L::splat(1.0) + e;
                L::splat(self.inv_gamma) * e / (d * d)
            }
        }
    }

    /// The local partial derivatives of one step at membrane `m` with spike `s` (METHOD.md
    /// §3.2–§3.4, hard reset as in `golden/README.md`).
    ///
    /// With `a = f′(x)` and `r = M/θ` (clamped to ±1e18):
    ///
    /// | family | ∂O/∂M | ∂O/∂θ | soft ∂U/∂M | soft ∂U/∂θ | hard ∂U/∂M | hard ∂U/∂θ |
    /// |---|---|---|---|---|---|---|
    /// | AS (§3.2), `x = M − θ`, `O = S` | `a` | `−a` | `1 − θa` | `−S + θa` | `1 − S − Ma` | `Ma` |
    /// | RS (§3.3), `x = r − 1`, `O = S` | `a/θ` | `−(ar)/θ` | `1 − a` | `−S + ar` | `1 − S − ar` | `(ar)r` |
    /// | TrSG (§3.4), `x = r − 1`, `O = θS` | `a` | `S − ar` | `1 − a` | `−S + ar` | `1 − S − ar` | `(ar)r` |
    ///
    /// The products are grouped so that no intermediate overflows for θ down to
    /// [`super::params::THETA_FLOOR`]: `a·r` is bounded for every shape, and only RS multiplies
    /// by `1/θ` — the explosion at small θ that is the paper's point (§3.3).
    #[inline(always)]
    pub fn partials<L: Lane>(
        &self,
        reset: Reset,
        theta: f32,
        inv_theta: f32,
        m: L,
        s: L::Mask,
    ) -> Partials<L> {
        let one = L::splat(1.0);
        let s_f = L::keep(s, one);
        match self.kind {
            SurrogateKind::As => {
                let th = L::splat(theta);
                let a = self.derivative(m - th);
                let (du_dm, du_dth) = match reset {
                    Reset::Soft => (one - th * a, th * a - s_f),
                    Reset::Hard => (one - s_f - m * a, m * a),
                };
                Partials {
                    do_dm: a,
                    do_dth: -a,
                    du_dm,
                    du_dth,
                }
            }
            SurrogateKind::Rs | SurrogateKind::Trsg => {
                let lim = L::splat(RATIO_LIMIT);
                let r = (m * L::splat(inv_theta)).max(-lim).min(lim);
                let a = self.derivative(r - one);
                let ar = a * r;
                let (du_dm, du_dth) = match reset {
                    Reset::Soft => (one - a, ar - s_f),
                    Reset::Hard => (one - s_f - ar, ar * r),
                };
                let (do_dm, do_dth) = match self.kind {
                    SurrogateKind::Rs => (a * L::splat(inv_theta), -(ar * L::splat(inv_theta))),
                    _ => (a, s_f - ar),
                };
                Partials {
                    do_dm,
                    do_dth,
                    du_dm,
                    du_dth,
                }
            }
        }
    }
}

/// The local partial derivatives of one step: output `O` and post-reset potential `U` with
/// respect to the pre-spike membrane `M` and the threshold θ.
#[derive(Clone, Copy, Debug)]
pub struct Partials<L> {
    /// ∂O/∂M.
    pub do_dm: L,
    /// ∂O/∂θ.
    pub do_dth: L,
    /// ∂U/∂M.
    pub du_dm: L,
    /// ∂U/∂θ.
    pub du_dth: L,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sur(shape: SurrogateShape, gamma: f32) -> Surrogate {
        Surrogate::new(SurrogateKind::Trsg, shape, gamma).unwrap()
    }

    #[test]
    fn shapes_match_their_formulas() {
        let rect = sur(SurrogateShape::Rect, 1.0);
        assert_eq!(rect.derivative(0.5f32), 1.0, "inclusive edge");
        assert_eq!(rect.derivative(-0.5f32), 1.0, "inclusive edge");
        assert_eq!(rect.derivative(0.500_001f32), 0.0);
        let tri = sur(SurrogateShape::Tri, 0.5);
        assert_eq!(tri.derivative(0.0f32), 2.0);
        assert_eq!(tri.derivative(0.25f32), 1.0);
        assert_eq!(tri.derivative(0.6f32), 0.0);
        let atan = sur(SurrogateShape::Atan, 2.0);
        let want = 2.0 / (2.0 * (1.0 + (std::f32::consts::PI * 0.3).powi(2)));
        assert!((atan.derivative(0.3f32) - want).abs() < 1e-6);
        let sig = sur(SurrogateShape::Sigmoid, 0.5);
        let s = 1.0 / (1.0 + (-0.7f64 / 0.5).exp());
        assert!((sig.derivative(0.7f32) as f64 - 2.0 * s * (1.0 - s)).abs() < 1e-7);
    }

    #[test]
    fn every_shape_integrates_to_one() {
        for shape in [
            SurrogateShape::Rect,
            SurrogateShape::Tri,
            SurrogateShape::Atan,
            SurrogateShape::Sigmoid,
        ] {
            for gamma in [0.5f32, 1.0, 2.0] {
                let s = sur(shape, gamma);
                let (h, half_width) = (1e-3f64, 200.0);
                let total: f64 = (-200_000..200_000)
                    .map(|i| s.derivative(((i as f64 + 0.5) * h) as f32) as f64 * h)
                    .sum();
                // atan's tails decay like 1/x²: its mass on [−L, L] is (2/π)·atan(πγL/2).
                let want = match shape {
                    SurrogateShape::Atan => {
                        std::f64::consts::FRAC_2_PI
                            * (std::f64::consts::FRAC_PI_2 * gamma as f64 * half_width).atan()
                    }
                    _ => 1.0,
                };
                assert!(
                    (total - want).abs() < 1e-4,
                    "{shape:?} γ={gamma}: ∫f′ = {total}"
                );
            }
        }
    }

    #[test]
    fn bad_gamma_is_rejected() {
        for g in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(Surrogate::new(SurrogateKind::As, SurrogateShape::Rect, g).is_err());
        }
    }
}
