//! (in progress)
use super::spec::LifSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
/// (in progress)
pub struct Lif {
    name: String,
}
impl Lif {
    /// (in progress)
    pub fn from_spec(spec: &LifSpec) -> Result<Self> {
        Ok(Lif {
            name: spec.name.clone(),
        })
    }
}
impl Layer for Lif {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("Lif in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("Lif in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("Lif in progress".into()))
    }
    crate::impl_as_any!();
}
