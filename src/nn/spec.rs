//! Models as data: the layer-spec format.
//!
//! A [`ModelSpec`] is a JSON document listing layers in order (the `network` format of
//! `../shared/golden/README.md`, plus a few layer types). Built-in models are generated as
//! specs (`crate::models`), and users pass their own with `--model path/to/spec.json`.
//!
//! ```
//! use mpsnn::nn::ModelSpec;
//! let spec: ModelSpec = serde_json::from_str(r#"{
//!   "name": "tiny", "input": [1, 8, 8], "classes": 3,
//!   "layers": [
//!     {"type": "conv2d", "name": "conv1", "in_channels": 1, "out_channels": 4, "kernel": 3, "padding": 1},
//!     {"type": "batchnorm2d", "name": "bn1", "num_features": 4},
//!     {"type": "lif", "name": "lif1"},
//!     {"type": "flatten", "name": "flat"},
//!     {"type": "linear", "name": "fc", "in_features": 256, "out_features": 3}
//!   ]}"#).unwrap();
//! assert_eq!(spec.layers.len(), 5);
//! ```

use serde::{Deserialize, Serialize};

/// How inputs become a `[T·B, C, H, W]` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Static images `[B, C, H, W]` repeated `T` times (at the first `repeat` layer, or before
    /// the first layer if the spec has none).
    #[default]
    Direct,
    /// Event frames already `[T·B, C, H, W]`, time-major.
    Frames,
}

/// A whole model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name (e.g. `mnist-cnn`).
    pub name: String,
    /// Per-sample input shape `[C, H, W]`.
    pub input: Vec<usize>,
    /// Number of classes (the last layer's output width).
    pub classes: usize,
    /// Input encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// Layers in forward order.
    pub layers: Vec<LayerSpec>,
}

/// One layer of a spec. The JSON field `type` selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerSpec {
    /// 2-D convolution.
    Conv2d(Conv2dSpec),
    /// Batch normalization over `N·H·W` per channel.
    Batchnorm2d(BatchNorm2dSpec),
    /// Multi-step LIF neuron layer.
    Lif(LifSpec),
    /// Max pooling (floor mode).
    Maxpool2d(PoolSpec),
    /// Average pooling (floor mode, no padding).
    Avgpool2d(PoolSpec),
    /// Average over all spatial positions: `[N, C, H, W] → [N, C, 1, 1]`.
    GlobalAvgpool2d(NamedSpec),
    /// `[N, ...] → [N, prod(...)]`.
    Flatten(NamedSpec),
    /// Fully connected layer on `[N, in_features]`.
    Linear(LinearSpec),
    /// `run(body, x) + run(shortcut, x)`; an empty shortcut is the identity.
    Residual(ResidualSpec),
    /// Dropout with one mask per sample shared across timesteps (training only).
    Dropout(DropoutSpec),
    /// Repeats a `[B, ...]` tensor `T` times into `[T·B, ...]` (direct encoding); layers before
    /// it run once per image instead of once per timestep.
    Repeat(NamedSpec),
}

impl LayerSpec {
    /// The layer's name.
    pub fn name(&self) -> &str {
        match self {
            LayerSpec::Conv2d(s) => &s.name,
            LayerSpec::Batchnorm2d(s) => &s.name,
            LayerSpec::Lif(s) => &s.name,
            LayerSpec::Maxpool2d(s) | LayerSpec::Avgpool2d(s) => &s.name,
            LayerSpec::GlobalAvgpool2d(s) | LayerSpec::Flatten(s) | LayerSpec::Repeat(s) => &s.name,
            LayerSpec::Linear(s) => &s.name,
            LayerSpec::Residual(s) => &s.name,
            LayerSpec::Dropout(s) => &s.name,
        }
    }
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn bn_eps() -> f32 {
    1e-5
}
fn bn_momentum() -> f32 {
    0.1
}
fn gamma_one() -> f32 {
    1.0
}
fn theta0_default() -> f32 {
    1.0
}
fn tau0_default() -> f32 {
    2.0
}

/// A layer with only a name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedSpec {
    /// Layer name.
    pub name: String,
}

/// `conv2d`: groups = 1, square kernel, NCHW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dSpec {
    /// Layer name; parameters are `<name>.weight` `[out, in, k, k]` and `<name>.bias`.
    pub name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride (default 1).
    #[serde(default = "one")]
    pub stride: usize,
    /// Zero padding on each side (default 0).
    #[serde(default)]
    pub padding: usize,
    /// Whether the layer has a bias (default false, as in the paper's networks).
    #[serde(default)]
    pub bias: bool,
}

/// `batchnorm2d`, PyTorch conventions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm2dSpec {
    /// Layer name; parameters `<name>.gamma`, `<name>.beta`; buffers `<name>.running_mean`,
    /// `<name>.running_var`.
    pub name: String,
    /// Channels.
    pub num_features: usize,
    /// Variance epsilon (default 1e-5).
    #[serde(default = "bn_eps")]
    pub eps: f32,
    /// Running-statistics momentum (default 0.1).
    #[serde(default = "bn_momentum")]
    pub momentum: f32,
    /// Accepted for compatibility with the golden files and ignored: the mode comes from the
    /// forward context.
    #[serde(default, skip_serializing)]
    pub training: Option<bool>,
}

/// Which surrogate gradient family (METHOD.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SurrogateKind {
    /// Threshold-robust SG: relative window, output `θ·S` (the paper's method).
    #[default]
    Trsg,
    /// Absolute-scale SG: `x = M − θ`, output `S`.
    As,
    /// Relative-scale SG: `x = M/θ − 1`, output `S`.
    Rs,
}

/// Shape of the surrogate derivative `f′(x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SurrogateShape {
    /// `(1/γ)·1(|x| ≤ γ/2)`.
    #[default]
    Rect,
    /// `(1/γ²)·max(0, γ − |x|)`.
    Tri,
    /// `γ / (2·(1 + (π/2·γ·x)²))`.
    Atan,
    /// `(1/γ)·σ(x/γ)·(1 − σ(x/γ))`.
    Sigmoid,
}

/// Membrane reset after a spike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reset {
    /// `U = M − θ·S` (default).
    #[default]
    Soft,
    /// `U = M·(1 − S)`.
    Hard,
}

/// `lif`: one multi-step LIF layer with per-layer θ = softplus(k), 1/τ = sigmoid(w) and μ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifSpec {
    /// Layer name; parameters `<name>.k`, `<name>.w`; buffer `<name>.mu`.
    pub name: String,
    /// Surrogate family (default TrSG).
    #[serde(default)]
    pub surrogate: SurrogateKind,
    /// Surrogate shape (default rectangle).
    #[serde(default)]
    pub shape: SurrogateShape,
    /// Surrogate width γ (default 1).
    #[serde(default = "gamma_one")]
    pub gamma: f32,
    /// Reset rule (default soft).
    #[serde(default)]
    pub reset: Reset,
    /// Learn θ (default true).
    #[serde(default = "yes")]
    pub learn_theta: bool,
    /// Learn τ (default true).
    #[serde(default = "yes")]
    pub learn_tau: bool,
    /// MP-Init on (default true); off means `U[0] = 0` and μ is never updated.
    #[serde(default = "yes")]
    pub mp_init: bool,
    /// Initial threshold θ0 (default 1).
    #[serde(default = "theta0_default")]
    pub theta0: f32,
    /// Initial time constant τ0 > 1 (default 2).
    #[serde(default = "tau0_default")]
    pub tau0: f32,
    /// Initial MP-Init potential μ (default 0).
    #[serde(default)]
    pub mu: f32,
}

impl LifSpec {
    /// A LIF layer with the paper's defaults (TrSG, rectangle, γ = 1, soft reset, learnable
    /// θ and τ, MP-Init on, θ0 = 1, τ0 = 2, μ0 = 0).
    pub fn new(name: impl Into<String>) -> Self {
        LifSpec {
            name: name.into(),
            surrogate: SurrogateKind::Trsg,
            shape: SurrogateShape::Rect,
            gamma: 1.0,
            reset: Reset::Soft,
            learn_theta: true,
            learn_tau: true,
            mp_init: true,
            theta0: 1.0,
            tau0: 2.0,
            mu: 0.0,
        }
    }
}

/// `maxpool2d` / `avgpool2d`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Layer name.
    pub name: String,
    /// Window size (square).
    pub kernel: usize,
    /// Stride (defaults to the kernel size).
    #[serde(default)]
    pub stride: Option<usize>,
    /// Implicit padding (`-inf` for max, only 0 supported for average).
    #[serde(default)]
    pub padding: usize,
}

impl PoolSpec {
    /// The effective stride.
    pub fn stride(&self) -> usize {
        self.stride.unwrap_or(self.kernel)
    }
}

/// `linear`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    /// Layer name; parameters `<name>.weight` `[out, in]` and `<name>.bias`.
    pub name: String,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Whether the layer has a bias (default true).
    #[serde(default = "yes")]
    pub bias: bool,
}

/// `residual`: `run(body, x) + run(shortcut, x)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualSpec {
    /// Block name (layers inside have their own names).
    pub name: String,
    /// The main branch.
    pub body: Vec<LayerSpec>,
    /// The shortcut branch; empty means identity.
    #[serde(default)]
    pub shortcut: Vec<LayerSpec>,
}

/// `dropout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    /// Layer name.
    pub name: String,
    /// Drop probability in `[0, 1)`.
    pub p: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_layer_specs_parse() {
        let json = r#"[
          {"type": "conv2d", "name": "c", "in_channels": 1, "out_channels": 4, "kernel": 3, "stride": 1, "padding": 1, "bias": false},
          {"type": "batchnorm2d", "name": "b", "num_features": 4, "eps": 1e-05, "momentum": 0.1, "training": true},
          {"type": "lif", "name": "l", "surrogate": "trsg", "shape": "rect", "gamma": 1.0, "reset": "soft",
           "learn_theta": true, "learn_tau": true, "mp_init": true, "theta0": 1.0, "tau0": 2.0, "mu": 0.15},
          {"type": "maxpool2d", "name": "p", "kernel": 2, "stride": 2, "padding": 0},
          {"type": "residual", "name": "r", "body": [{"type": "flatten", "name": "f"}], "shortcut": []},
          {"type": "linear", "name": "fc", "in_features": 8, "out_features": 3, "bias": true}
        ]"#;
        let layers: Vec<LayerSpec> = serde_json::from_str(json).unwrap();
        assert_eq!(layers.len(), 6);
        match &layers[2] {
            LayerSpec::Lif(l) => assert_eq!(l.mu, 0.15),
            other => panic!("expected lif, got {other:?}"),
        }
    }

    #[test]
    fn typos_are_rejected() {
        let bad =
            r#"{"type": "conv2d", "name": "c", "in_channels": 1, "out_channels": 4, "kernal": 3}"#;
        assert!(serde_json::from_str::<LayerSpec>(bad).is_err());
    }
}
