//! Building layers from [`LayerSpec`]s, with deterministic PyTorch-default initialization.

use super::batchnorm::BatchNorm2d;
use super::conv::Conv2d;
use super::dropout::Dropout;
use super::flatten::Flatten;
use super::lif::Lif;
use super::linear::Linear;
use super::pool::{AvgPool2d, GlobalAvgPool2d, MaxPool2d};
use super::repeat::Repeat;
use super::residual::Residual;
use super::spec::LayerSpec;
use super::{Layer, Sequential};
use crate::error::{Error, Result};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

/// The random generator used for parameter initialization (seeded, portable, reproducible).
pub type InitRng = ChaCha8Rng;

/// A fresh initialization generator for `seed`.
pub fn init_rng(seed: u64) -> InitRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values drawn from `U(-bound, bound)`: PyTorch's default for conv/linear weights and
/// biases with `bound = 1/sqrt(fan_in)`.
pub fn uniform(rng: &mut InitRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

/// Builds `specs` into a [`Sequential`] named `name`, initializing parameters in spec order
/// from `rng`. Layer names must be unique across the whole model (checked by the caller with
/// [`check_unique_names`]).
pub fn build_sequential(
    name: &str,
    specs: &[LayerSpec],
    rng: &mut InitRng,
    seed: u64,
) -> Result<Sequential> {
    let layers = specs
        .iter()
        .map(|s| build_layer(s, rng, seed))
        .collect::<Result<Vec<_>>>()?;
    Ok(Sequential::new(name, layers))
}

/// Builds one layer.
pub fn build_layer(spec: &LayerSpec, rng: &mut InitRng, seed: u64) -> Result<Box<dyn Layer>> {
    Ok(match spec {
        LayerSpec::Conv2d(s) => Box::new(Conv2d::from_spec(s, rng)?),
        LayerSpec::Batchnorm2d(s) => Box::new(BatchNorm2d::from_spec(s)?),
        LayerSpec::Lif(s) => Box::new(Lif::from_spec(s)?),
        LayerSpec::Maxpool2d(s) => Box::new(MaxPool2d::from_spec(s)?),
        LayerSpec::Avgpool2d(s) => Box::new(AvgPool2d::from_spec(s)?),
        LayerSpec::GlobalAvgpool2d(s) => Box::new(GlobalAvgPool2d::new(&s.name)),
        LayerSpec::Flatten(s) => Box::new(Flatten::new(&s.name)),
        LayerSpec::Linear(s) => Box::new(Linear::from_spec(s, rng)?),
        LayerSpec::Dropout(s) => Box::new(Dropout::from_spec(s, seed)?),
        LayerSpec::Repeat(s) => Box::new(Repeat::new(&s.name)),
        LayerSpec::Residual(s) => {
            let body = build_sequential(&format!("{}.body", s.name), &s.body, rng, seed)?;
            let shortcut =
                build_sequential(&format!("{}.shortcut", s.name), &s.shortcut, rng, seed)?;
            Box::new(Residual::new(&s.name, body, shortcut))
        }
    })
}

/// Fails if two layers (at any depth) share a name: parameter names must be unique.
pub fn check_unique_names(specs: &[LayerSpec]) -> Result<()> {
    fn walk<'a>(specs: &'a [LayerSpec], seen: &mut HashSet<&'a str>) -> Result<()> {
        for s in specs {
            if !seen.insert(s.name()) {
                return Err(Error::Spec(format!("duplicate layer name {:?}", s.name())));
            }
            if let LayerSpec::Residual(r) = s {
                walk(&r.body, seen)?;
                walk(&r.shortcut, seen)?;
            }
        }
        Ok(())
    }
    walk(specs, &mut HashSet::new())
}
