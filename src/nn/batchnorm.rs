//! (in progress)
use super::spec::BatchNorm2dSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
/// (in progress)
pub struct BatchNorm2d {
    name: String,
}
impl BatchNorm2d {
    /// (in progress)
    pub fn from_spec(spec: &BatchNorm2dSpec) -> Result<Self> {
        Ok(BatchNorm2d {
            name: spec.name.clone(),
        })
    }
}
impl Layer for BatchNorm2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("BatchNorm2d in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("BatchNorm2d in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("BatchNorm2d in progress".into()))
    }
    crate::impl_as_any!();
}
