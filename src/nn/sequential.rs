//! [`Sequential`]: layers run one after another.

use super::{Buffer, ForwardCtx, Layer, Param};
use crate::error::Result;
use crate::tensor::Tensor;

/// Runs its layers in order; backward runs them in reverse.
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// A container named `name` holding `layers`.
    pub fn new(name: impl Into<String>, layers: Vec<Box<dyn Layer>>) -> Self {
        Sequential {
            name: name.into(),
            layers,
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
        for layer in &mut self.layers {
            x = layer.forward(x, ctx)?;
        }
        Ok(x)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let mut g = grad_output;
        for layer in self.layers.iter_mut().rev() {
            g = layer.backward(g)?;
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

    crate::impl_as_any!();
}
