//! (in progress)
use super::spec::PoolSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
/// (in progress)
pub struct MaxPool2d {
    name: String,
}
impl MaxPool2d {
    /// (in progress)
    pub fn from_spec(spec: &PoolSpec) -> Result<Self> {
        Ok(MaxPool2d {
            name: spec.name.clone(),
        })
    }
}
/// (in progress)
pub struct AvgPool2d {
    name: String,
}
impl AvgPool2d {
    /// (in progress)
    pub fn from_spec(spec: &PoolSpec) -> Result<Self> {
        Ok(AvgPool2d {
            name: spec.name.clone(),
        })
    }
}
/// (in progress)
pub struct GlobalAvgPool2d {
    name: String,
}
impl GlobalAvgPool2d {
    /// (in progress)
    pub fn new(name: &str) -> Self {
        GlobalAvgPool2d {
            name: name.to_string(),
        }
    }
}
impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("MaxPool2d in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("MaxPool2d in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("MaxPool2d in progress".into()))
    }
    crate::impl_as_any!();
}
impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("AvgPool2d in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("AvgPool2d in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("AvgPool2d in progress".into()))
    }
    crate::impl_as_any!();
}
impl Layer for GlobalAvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_shape(&self, _input: &[usize]) -> Result<Vec<usize>> {
        Err(Error::Unsupported("GlobalAvgPool2d in progress".into()))
    }
    fn forward(&mut self, _input: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Err(Error::Unsupported("GlobalAvgPool2d in progress".into()))
    }
    fn backward(&mut self, _g: Tensor) -> Result<Tensor> {
        Err(Error::Unsupported("GlobalAvgPool2d in progress".into()))
    }
    crate::impl_as_any!();
}
