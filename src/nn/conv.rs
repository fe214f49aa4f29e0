//! (in progress)
use super::build::InitRng;
use super::spec::Conv2dSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
/// (in progress)
pub struct Conv2d {
    name: String,
}
impl Conv2d {
    /// (in progress)
    pub fn from_spec(spec: &Conv2dSpec, _rng: &mut InitRng) -> Result<Self> {
        Ok(Conv2d {
            name: spec.name.clone(),
        })
    }
}
impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("Conv2d in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("Conv2d in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("Conv2d in progress".into()))
    }
    crate::impl_as_any!();
}
