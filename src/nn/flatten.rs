//! [`Flatten`]: `[N, ...] → [N, prod(...)]`.

use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Flattens all axes after the first; a pure reshape (keeps the spike hint).
pub struct Flatten {
    name: String,
    input_shape: Option<Vec<usize>>,
}

impl Flatten {
    /// A flatten layer named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Flatten {
            name: name.into(),
            input_shape: None,
        }
    }
}

impl Layer for Flatten {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [] => Err(Error::shape(&self.name, "[N, ...]", input)),
            [n, rest @ ..] => Ok(vec![*n, rest.iter().product()]),
        }
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let out = self.output_shape(input.shape())?;
        self.input_shape = ctx.is_train().then(|| input.shape().to_vec());
        input.reshape(&out)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let shape = self
            .input_shape
            .as_ref()
            .ok_or_else(|| Error::NoForwardCache {
                layer: self.name.clone(),
            })?;
        grad_output.reshape(shape)
    }

    fn clear_cache(&mut self) {
        self.input_shape = None;
    }

    crate::impl_as_any!();
}
