//! (in progress)
use super::build::InitRng;
use super::spec::LinearSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
/// (in progress)
pub struct Linear {
    name: String,
}
impl Linear {
    /// (in progress)
    pub fn from_spec(spec: &LinearSpec, _rng: &mut InitRng) -> Result<Self> {
        Ok(Linear {
            name: spec.name.clone(),
        })
    }
}
impl Layer for Linear {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("Linear in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("Linear in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("Linear in progress".into()))
    }
    crate::impl_as_any!();
}
