//! `export`, `infer` and `demo` (in progress until the micro runtime lands).
use crate::args::{DemoArgs, ExportArgs, InferArgs};
use mpsnn::{Error, Result};
/// `mpsnn export`
pub fn export(_a: &ExportArgs) -> Result<()> {
    Err(Error::Unsupported("export: in progress".into()))
}
/// `mpsnn infer`
pub fn infer(_a: &InferArgs) -> Result<()> {
    Err(Error::Unsupported("infer: in progress".into()))
}
/// `mpsnn demo`
pub fn demo(_a: &DemoArgs) -> Result<()> {
    Err(Error::Unsupported("demo: in progress".into()))
}
