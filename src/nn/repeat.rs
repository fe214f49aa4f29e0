//! [`Repeat`]: direct encoding, `[B, ...] → [T·B, ...]` (time-major).

use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::kernels::elementwise;
use crate::tensor::Tensor;

/// Tiles its input `T` times along the batch axis; backward sums the `T` gradient slices.
///
/// Layers placed before it (the stem conv + BN) run once per image instead of once per
/// timestep. Their results are identical: they are time-invariant, and BatchNorm's batch mean and
/// biased variance over `T` identical copies equal those over one copy (only the unbiased
/// running-variance correction `n/(n−1)` sees the smaller `n`).
pub struct Repeat {
    name: String,
    /// `(T, per-step length)` of the last training forward.
    cached: Option<(usize, usize)>,
}

impl Repeat {
    /// A repeat layer named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Repeat {
            name: name.into(),
            cached: None,
        }
    }
}

impl Layer for Repeat {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        // The batch dimension is symbolic here; T multiplies it at run time.
        if input.is_empty() {
            return Err(Error::shape(&self.name, "[B, ...]", input));
        }
        Ok(input.to_vec())
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let t = ctx.timesteps;
        if input.shape().is_empty() || t == 0 {
            return Err(Error::shape(
                &self.name,
                "[B, ...] with T >= 1",
                input.shape(),
            ));
        }
        let step = input.len();
        let mut shape = input.shape().to_vec();
        shape[0] *= t;
        let mut data = crate::buffer_pool::overwritable(step * t);
        elementwise::par_tile(&mut data, input.data());
        self.cached = ctx.is_train().then_some((t, step));
        let scale = input.spike_scale();
        Ok(Tensor::from_vec(&shape, data)?.with_spike_scale(scale))
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let (t, step) = self.cached.ok_or_else(|| Error::NoForwardCache {
            layer: self.name.clone(),
        })?;
        if grad_output.len() != t * step {
            return Err(Error::shape(
                &self.name,
                format!("{} elements (T = {t})", t * step),
                grad_output.shape(),
            ));
        }
        let mut shape = grad_output.shape().to_vec();
        shape[0] /= t;
        let mut sum = crate::buffer_pool::overwritable(step);
        elementwise::par_sum_tiles(&mut sum, grad_output.data());
        Tensor::from_vec(&shape, sum)
    }

    fn clear_cache(&mut self) {
        self.cached = None;
    }

    crate::impl_as_any!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_then_sum() {
        let mut r = Repeat::new("rep");
        let x = Tensor::from_vec(&[2, 1], vec![1.0, 2.0]).unwrap();
        let y = r.forward(x, &ForwardCtx::train(3)).unwrap();
        assert_eq!(y.shape(), &[6, 1]);
        assert_eq!(y.data(), &[1., 2., 1., 2., 1., 2.]);
        let g = Tensor::from_vec(&[6, 1], vec![1., 10., 2., 20., 3., 30.]).unwrap();
        let gx = r.backward(g).unwrap();
        assert_eq!(gx.shape(), &[2, 1]);
        assert_eq!(gx.data(), &[6., 60.]);
    }
}
