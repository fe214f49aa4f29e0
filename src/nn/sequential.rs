//! [`Sequential`]: layers run one after another.

use super::lif::Lif;
use super::{Buffer, ForwardCtx, Layer, Param};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Runs its layers in order; backward runs them in reverse.
///
/// Memory: in training, a LIF layer whose predecessor can rebuild its output
/// ([`Layer::can_recompute_output`]: batch norm, a residual block ending in one) keeps nothing
/// for backward; its backward first reruns its forward on the rebuilt input (same bits, so the
/// same gradients) — one f32 tensor fewer per neuron layer.
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    recompute: bool,
}

impl Sequential {
    /// A container named `name` holding `layers`.
    pub fn new(name: impl Into<String>, layers: Vec<Box<dyn Layer>>) -> Self {
        Sequential {
            name: name.into(),
            layers,
            recompute: true,
        }
    }

    /// Turns the LIF-input recomputation (see the type docs) on or off here and in every
    /// nested container (default on). Off keeps each LIF's membrane tape instead: more memory,
    /// one LIF forward less per step; results are bit-identical either way.
    pub fn set_recompute(&mut self, on: bool) {
        self.recompute = on;
        fn walk(layer: &mut dyn Layer, on: bool) {
            for child in layer.children_mut() {
                if let Some(seq) = child.as_any_mut().downcast_mut::<Sequential>() {
                    seq.set_recompute(on);
                } else {
                    walk(child, on);
                }
            }
        }
        for layer in &mut self.layers {
            if let Some(seq) = layer.as_any_mut().downcast_mut::<Sequential>() {
                seq.set_recompute(on);
            } else {
                walk(layer.as_mut(), on);
            }
        }
    }

    /// The layers, in forward order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layers, mutable.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// The layer vector itself (to insert or remove layers).
    pub fn layers_mut_vec(&mut self) -> &mut Vec<Box<dyn Layer>> {
        &mut self.layers
    }

    /// True if it holds no layers (an identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Layer for Sequential {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for layer in &self.layers {
            shape = layer.output_shape(&shape)?;
        }
        Ok(shape)
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let mut x = input;
        for i in 0..self.layers.len() {
            if ctx.is_train() {
                let recomputable =
                    self.recompute && i > 0 && self.layers[i - 1].can_recompute_output();
                if let Some(lif) = self.layers[i].as_any_mut().downcast_mut::<Lif>() {
                    lif.set_input_recomputable(recomputable);
                }
            }
            x = self.layers[i].forward(x, ctx)?;
        }
        Ok(x)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let mut g = grad_output;
        for i in (0..self.layers.len()).rev() {
            let deferred = self.layers[i]
                .as_any()
                .downcast_ref::<Lif>()
                .is_some_and(Lif::input_deferred);
            g = if deferred {
                let input = i
                    .checked_sub(1)
                    .and_then(|p| self.layers[p].recompute_output())
                    .ok_or_else(|| {
                        Error::State(format!(
                            "{}: the layer before {} cannot recompute its output",
                            self.name,
                            self.layers[i].name()
                        ))
                    })?;
                let lif = self.layers[i].as_any_mut().downcast_mut::<Lif>();
                lif.expect("checked above").backward_with_input(g, input)?
            } else {
                self.layers[i].backward(g)?
            };
        }
        Ok(g)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for layer in &mut self.layers {
            layer.visit_params(f);
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut Buffer)) {
        for layer in &mut self.layers {
            layer.visit_buffers(f);
        }
    }

    fn children_mut(&mut self) -> Vec<&mut dyn Layer> {
        self.layers
            .iter_mut()
            .map(|l| l.as_mut() as &mut dyn Layer)
            .collect()
    }

    fn is_leaf(&self) -> bool {
        false
    }

    fn clear_cache(&mut self) {
        for layer in &mut self.layers {
            layer.clear_cache();
        }
    }

    fn can_recompute_output(&self) -> bool {
        self.layers.last().is_some_and(|l| l.can_recompute_output())
    }

    fn recompute_output(&self) -> Option<Tensor> {
        self.layers.last()?.recompute_output()
    }

    crate::impl_as_any!();
}
