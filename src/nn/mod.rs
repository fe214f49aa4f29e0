//! Layers built on the kernels, the [`Layer`] trait, containers, and models as data.
//!
//! Every layer caches in `forward` (training mode) what its `backward` needs; `backward` returns
//! the input gradient and *accumulates* into its parameters' gradients. Tensors are NCHW with time
//! folded into the batch axis (`N = T·B`, time-major); only LIF layers walk time.
//!
//! Parameters and buffers carry their full names (`<layer>.<param>`, e.g. `conv1.weight`,
//! `lif1.k`, `lif1.mu`), so checkpoints and exports are keyed by name, never by position.

use crate::error::Result;
use crate::tensor::Tensor;
use std::any::Any;

pub mod batchnorm;
pub mod build;
pub mod conv;
pub mod dropout;
pub mod flatten;
mod fuse;
pub mod lif;
pub mod linear;
pub mod network;
pub mod pool;
pub mod repeat;
pub mod residual;
pub mod sequential;
pub mod spec;

pub use network::{Network, StateDict};
pub use sequential::Sequential;
pub use spec::{Encoding, LayerSpec, ModelSpec};

/// Training or evaluation behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, MP-Init running-mean updates, caches for backward.
    Train,
    /// Running statistics, frozen MP-Init potentials, nothing cached.
    Eval,
}

/// What a forward pass needs to know besides its input.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ForwardCtx {
    /// Training or evaluation.
    pub mode: Mode,
    /// Number of timesteps `T` folded into the batch axis.
    pub timesteps: usize,
    /// Global training step; stochastic layers (dropout) derive their randomness from it, so
    /// a run is reproducible and resumable without saving generator state.
    pub step: u64,
    /// Position of this batch's first sample in the step's global batch (data-parallel: the
    /// samples of lower ranks; 0 in one process), so a sample's dropout mask does not depend
    /// on how the global batch is split over ranks.
    pub sample_offset: u64,
}

impl ForwardCtx {
    /// Training-mode context for `timesteps` steps.
    pub fn train(timesteps: usize) -> Self {
        ForwardCtx {
            mode: Mode::Train,
            timesteps,
            step: 0,
            sample_offset: 0,
        }
    }

    /// Evaluation-mode context for `timesteps` steps.
    pub fn eval(timesteps: usize) -> Self {
        ForwardCtx {
            mode: Mode::Eval,
            timesteps,
            step: 0,
            sample_offset: 0,
        }
    }

    /// The same context at global training step `step`.
    pub fn with_step(mut self, step: u64) -> Self {
        self.step = step;
        self
    }

    /// The same context for a batch that starts at sample `offset` of the global batch.
    pub fn with_sample_offset(mut self, offset: u64) -> Self {
        self.sample_offset = offset;
        self
    }

    /// True in training mode.
    pub fn is_train(&self) -> bool {
        self.mode == Mode::Train
    }
}

/// A learnable tensor with its gradient accumulator.
#[derive(Clone, Debug)]
pub struct Param {
    /// Full name, `<layer>.<param>`.
    pub name: String,
    /// Current value.
    pub value: Tensor,
    /// Accumulated gradient (same shape as `value`); layers add to it, optimizers zero it.
    pub grad: Tensor,
    /// False for frozen parameters (e.g. θ or τ in the paper's ablations): no gradient is
    /// accumulated and optimizers leave the value alone.
    pub trainable: bool,
}

impl Param {
    /// A trainable parameter with a zero gradient.
    pub fn new(name: impl Into<String>, value: Tensor) -> Self {
        let grad = Tensor::zeros(value.shape());
        Param {
            name: name.into(),
            value,
            grad,
            trainable: true,
        }
    }

    /// The same parameter, frozen or not.
    pub fn trainable(mut self, trainable: bool) -> Self {
        self.trainable = trainable;
        self
    }
}

/// A named non-learnable state tensor (BN running statistics, the MP-Init potential μ).
#[derive(Clone, Debug)]
pub struct Buffer {
    /// Full name, `<layer>.<buffer>`.
    pub name: String,
    /// Current value.
    pub value: Tensor,
}

impl Buffer {
    /// A named buffer.
    pub fn new(name: impl Into<String>, value: Tensor) -> Self {
        Buffer {
            name: name.into(),
            value,
        }
    }
}

/// A differentiable network layer.
///
/// Contract:
/// - `forward` consumes its input (so layers can reuse the allocation or keep it for backward)
///   and returns the output. In [`Mode::Train`] it caches what `backward` needs; in
///   [`Mode::Eval`] it caches nothing.
/// - `backward` takes `∂L/∂output` for the most recent training forward, returns `∂L/∂input`
///   and adds the parameter gradients into [`Param::grad`]. Calling it without a training
///   forward is [`crate::Error::NoForwardCache`].
/// - Shape problems are [`crate::Error::ShapeMismatch`] naming both shapes, raised before any
///   kernel runs.
pub trait Layer: Send + Any {
    /// The layer's name (the prefix of its parameters' names).
    fn name(&self) -> &str;

    /// The output shape for an input of shape `input`, or a shape error naming both.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Runs the layer; see the trait docs for the caching contract.
    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor>;

    /// [`Layer::forward`] on a borrowed input, for a caller that still needs it (a residual
    /// block's shortcut). The default runs `forward` on a copy; layers that only read their
    /// input override it to skip the copy.
    fn forward_ref(&mut self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.forward(input.parallel_clone(), ctx)
    }

    /// Back-propagates `grad_output`; see the trait docs.
    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor>;

    /// Calls `f` on every parameter (containers recurse).
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param)) {}

    /// Calls `f` on every buffer (containers recurse).
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(&mut Buffer)) {}

    /// The direct children of a container layer; leaves have none.
    fn children_mut(&mut self) -> Vec<&mut dyn Layer> {
        Vec::new()
    }

    /// False for containers ([`Sequential`], [`residual::Residual`]), true for real layers.
    fn is_leaf(&self) -> bool {
        true
    }

    /// Drops any cached forward state (frees memory between steps).
    fn clear_cache(&mut self) {}

    /// True if the layer reads a spike input bit-packed ([`Tensor::spike_bits`]), so the
    /// spiking layer before it should attach its output's bits (packing costs a pass over the
    /// output that is wasted when nothing reads them).
    fn reads_spike_bits(&self) -> bool {
        false
    }

    /// True if [`Layer::recompute_output`] can rebuild the output of the layer's most recent
    /// training forward from what it keeps for its own backward (for a layer whose input is
    /// deferred, once [`Layer::restore_input`] gave it back). A layer right after such a layer
    /// may defer its input ([`Layer::set_input_recomputable`], [`Sequential`]).
    fn can_recompute_output(&self) -> bool {
        false
    }

    /// The output of the most recent training forward, rebuilt bit-identically from the
    /// backward cache, or `None` if the layer cannot (see [`Layer::can_recompute_output`]).
    /// Takes `&mut self` so that a container can restore deferred inputs on the way; the layer's
    /// own backward must still follow.
    fn recompute_output(&mut self) -> Option<Tensor> {
        None
    }

    /// Says whether the caller can hand the next training forward's input back at backward
    /// time ([`Layer::restore_input`]). A layer that takes the offer keeps less for backward.
    /// [`Sequential`] sets this before every training forward; layers that cannot use it
    /// ignore it (the default).
    fn set_input_recomputable(&mut self, _yes: bool) {}

    /// True if the last training forward kept less than its backward needs: the caller must
    /// call [`Layer::restore_input`] before [`Layer::backward`] (or [`Layer::recompute_output`]).
    fn input_deferred(&self) -> bool {
        false
    }

    /// Hands back the input of the last training forward, bit for bit, to a layer whose input
    /// is deferred ([`Layer::input_deferred`]). Errors if the layer deferred nothing or the
    /// shape differs.
    fn restore_input(&mut self, _input: Tensor) -> Result<()> {
        Err(crate::Error::State(format!(
            "{}: no deferred input to restore",
            self.name()
        )))
    }

    /// `self` as [`Any`], to downcast to a concrete layer (e.g. to read LIF statistics).
    fn as_any(&self) -> &dyn Any;

    /// `self` as mutable [`Any`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Calls `f` on every leaf layer under `root`, depth first, in forward order.
pub fn for_each_leaf(root: &mut dyn Layer, f: &mut dyn FnMut(&mut dyn Layer)) {
    if root.is_leaf() {
        f(root);
    } else {
        for child in root.children_mut() {
            for_each_leaf(child, f);
        }
    }
}

/// Implements [`Layer::as_any`] and [`Layer::as_any_mut`] inside an `impl Layer for X` block.
#[macro_export]
macro_rules! impl_as_any {
    () => {
        fn as_any(&self) -> &dyn ::std::any::Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn ::std::any::Any {
            self
        }
    };
}
