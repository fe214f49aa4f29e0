//! (in progress)
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use super::spec::DropoutSpec;
/// (in progress)
pub struct Dropout { name: String }
impl Dropout {
    /// (in progress)
    pub fn from_spec(spec: &DropoutSpec, _seed: u64) -> Result<Self> { Ok(Dropout { name: spec.name.clone() }) }
}
impl Layer for Dropout {
    fn name(&self) -> &str { &self.name }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> { Err(Error::Unsupported("Dropout in progress".into())) }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> { Err(Error::Unsupported("Dropout in progress".into())) }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> { Err(Error::Unsupported("Dropout in progress".into())) }
    crate::impl_as_any!();
}
