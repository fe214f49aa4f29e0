//! [`Residual`]: `body(x) + shortcut(x)`, the ResNet basic block without its final neuron.

use super::batchnorm::{BatchNorm2d, EvalAffine};
use super::{Buffer, ForwardCtx, Layer, Param, Sequential};
use crate::error::{Error, Result};
use crate::kernels::conv::sparse::SpikeBits;
use crate::kernels::elementwise;
use crate::tensor::Tensor;
use std::sync::Arc;

/// A shortcut branch's output, as [`Residual::forward_eval_open`] hands it on.
pub(super) enum Shortcut {
    /// An identity shortcut over spikes: the input's bits.
    Spikes(Arc<SpikeBits>),
    /// Values.
    Dense(Tensor),
}

/// Sums a body branch and a shortcut branch; an empty shortcut is the identity.
///
/// The neuron after the addition is the next layer of the enclosing list, as in the golden
/// `residual` format and the paper's BasicBlock: `lif2(bn2(conv2(lif1(bn1(conv1 x)))) + sc(x))`.
pub struct Residual {
    name: String,
    body: Sequential,
    shortcut: Sequential,
    /// The last training input, bit-packed, when the shortcut is the identity and the input is
    /// a spike tensor: enough to rebuild the output ([`Layer::recompute_output`]).
    identity_input: Option<(Vec<usize>, Arc<SpikeBits>)>,
}

impl Residual {
    /// A residual block from its two branches.
    pub fn new(name: impl Into<String>, body: Sequential, shortcut: Sequential) -> Self {
        Residual {
            name: name.into(),
            body,
            shortcut,
            identity_input: None,
        }
    }

    /// The main branch.
    pub fn body(&self) -> &Sequential {
        &self.body
    }

    /// The shortcut branch (empty = identity).
    pub fn shortcut(&self) -> &Sequential {
        &self.shortcut
    }

    /// True if [`Residual::forward_eval_open`] applies: the body ends with a batch norm after
    /// at least one other layer.
    pub(super) fn can_open_eval(&self) -> bool {
        let layers = self.body.layers();
        layers.len() >= 2
            && layers
                .last()
                .is_some_and(|l| l.as_any().is::<BatchNorm2d>())
    }

    /// The eval forward left open for the neuron after the block to finish in one pass
    /// ([`super::fuse`]): the body's output before its final batch norm, that norm's
    /// coefficients, and the shortcut's output (an identity over spikes as its bits). The
    /// block's output is `affine(body) + shortcut`. Fails in training mode or where
    /// [`Residual::can_open_eval`] does not hold.
    pub(super) fn forward_eval_open(
        &mut self,
        input: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<(Tensor, EvalAffine, Shortcut)> {
        if ctx.is_train() || !self.can_open_eval() {
            return Err(Error::State(format!(
                "{}: an open forward needs eval mode and a body ending in a batch norm",
                self.name
            )));
        }
        self.identity_input = None;
        let bits = match (self.shortcut.is_empty(), input.shape()) {
            (true, [n, c, rest @ ..]) => input.packed_spikes(*n, *c, rest.iter().product()),
            _ => None,
        };
        let shape = input.shape().to_vec();
        let side = match bits {
            Some(bits) => Shortcut::Spikes(bits),
            None => Shortcut::Dense(self.shortcut.forward_ref(&input, ctx)?),
        };
        let last = self.body.layers().len() - 1;
        let pre = self.body.forward_until(input, ctx, last)?;
        let bn = self.body.layers_mut()[last]
            .as_any_mut()
            .downcast_mut::<BatchNorm2d>()
            .expect("can_open_eval checked the type");
        let affine = bn.eval_affine(pre.shape())?;
        let side_shape = match &side {
            Shortcut::Spikes(_) => shape.as_slice(),
            Shortcut::Dense(t) => t.shape(),
        };
        self.check_side(pre.shape(), side_shape)?;
        Ok((pre, affine, side))
    }

    /// The error for a shortcut output of shape `side` that cannot be added to a body output
    /// of shape `body`.
    fn check_side(&self, body: &[usize], side: &[usize]) -> Result<()> {
        if body == side {
            return Ok(());
        }
        Err(Error::ShapeMismatch {
            layer: self.name.clone(),
            expected: format!("shortcut output equal to body output {body:?}"),
            got: format!("{side:?}"),
        })
    }
}

impl Layer for Residual {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let body = self.body.output_shape(input)?;
        let shortcut = self.shortcut.output_shape(input)?;
        self.check_side(&body, &shortcut)?;
        Ok(body)
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.identity_input = None;
        // An identity shortcut over spikes keeps its input as bits (1/32 of an f32 copy) and
        // adds them back from there; the bits also let training rebuild the output.
        let bits = match (self.shortcut.is_empty(), input.shape()) {
            (true, [n, c, rest @ ..]) => input.packed_spikes(*n, *c, rest.iter().product()),
            _ => None,
        };
        if let Some(bits) = bits {
            let shape = input.shape().to_vec();
            let mut out = self.body.forward(input, ctx)?;
            self.check_side(out.shape(), &shape)?;
            bits.add_to(out.data_mut());
            if ctx.is_train() {
                self.identity_input = Some((shape, bits));
            }
            return Ok(out);
        }
        let side = self.shortcut.forward_ref(&input, ctx)?;
        let mut out = self.body.forward(input, ctx)?;
        self.check_side(out.shape(), side.shape())?;
        elementwise::par_add_assign(out.data_mut(), side.data());
        Ok(out)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let grad_side = self.shortcut.backward(grad_output.parallel_clone())?;
        let mut grad = self.body.backward(grad_output)?;
        elementwise::par_add_assign(grad.data_mut(), grad_side.data());
        Ok(grad)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.body.visit_params(f);
        self.shortcut.visit_params(f);
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut Buffer)) {
        self.body.visit_buffers(f);
        self.shortcut.visit_buffers(f);
    }

    fn children_mut(&mut self) -> Vec<&mut dyn Layer> {
        vec![&mut self.body, &mut self.shortcut]
    }

    fn is_leaf(&self) -> bool {
        false
    }

    fn clear_cache(&mut self) {
        self.body.clear_cache();
        self.shortcut.clear_cache();
        self.identity_input = None;
    }

    fn reads_spike_bits(&self) -> bool {
        self.shortcut.is_empty() || self.shortcut.reads_spike_bits() || self.body.reads_spike_bits()
    }

    fn can_recompute_output(&self) -> bool {
        self.body.can_recompute_output()
            && if self.shortcut.is_empty() {
                self.identity_input.is_some()
            } else {
                self.shortcut.can_recompute_output()
            }
    }

    /// `body + shortcut` rebuilt from the branches' caches, added in the forward's order.
    fn recompute_output(&mut self) -> Option<Tensor> {
        let mut out = self.body.recompute_output()?;
        if self.shortcut.is_empty() {
            let (shape, bits) = self.identity_input.as_ref()?;
            if out.shape() != shape.as_slice() {
                return None;
            }
            bits.add_to(out.data_mut());
            return Some(out);
        }
        let side = self.shortcut.recompute_output()?;
        if out.shape() != side.shape() {
            return None;
        }
        elementwise::par_add_assign(out.data_mut(), side.data());
        Some(out)
    }

    crate::impl_as_any!();
}
