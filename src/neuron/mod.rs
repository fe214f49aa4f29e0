//! The LIF neuron of METHOD.md §1–§4: dynamics, the learnable θ/τ parametrisation, the
//! surrogate-gradient family (AS-SG, RS-SG, TrSG × rectangle/triangle/arctan/sigmoid) and
//! MP-Init.
//!
//! - [`params`]: θ = softplus(k), λ = 1/τ = sigmoid(w), and their inverses for initialisation.
//! - [`surrogate`]: the shapes `f′(x)` and the per-family local partial derivatives.
//! - [`step`]: one timestep forward and backward as pure functions (the unit everything else is
//!   built from); [`lane`] lets the same code run on `f32`, `f32x8` and `f32x16`.
//! - [`mp_init`]: the μ running-mean rule.
//! - [`recorder`]: optional membrane histograms for diagnostics.
//!
//! The fused multi-step kernels are in [`crate::kernels::lif`], the layer in [`crate::nn::lif`].
//!
//! ```
//! use mpsnn::neuron::{params::Derived, step::{step, StepParams}, surrogate::*};
//! // θ = 1, τ = 2 (k = ln(e − 1), w = 0), TrSG: one step from U = 0.3 with input 1.2.
//! let d = Derived::from_raw(mpsnn::neuron::params::k_from_theta(1.0).unwrap(), 0.0);
//! let sur = Surrogate::new(SurrogateKind::Trsg, SurrogateShape::Rect, 1.0).unwrap();
//! let p = StepParams::new(&d, sur, Reset::Soft);
//! let out = step(&p, 0.3f32, 1.2f32);
//! assert_eq!(out.m, 0.75);
//! assert!(!out.s);
//! ```

pub mod lane;
pub mod mp_init;
pub mod params;
pub mod recorder;
pub mod step;
pub mod surrogate;
