//! [`Dropout`] for spiking networks: one mask per sample element, shared by all timesteps.
//!
//! Sharing the mask across `T` (as SpikingJelly's multi-step dropout does) drops a neuron for
//! the whole simulation instead of injecting per-step noise. The mask is a pure function of the
//! model seed, the layer name, the global step ([`ForwardCtx::step`]) and the sample's position
//! in the global batch ([`ForwardCtx::sample_offset`] + its index in this batch), so runs are
//! reproducible and resumable without storing generator state, and a data-parallel rank draws
//! exactly the masks a single process would give the same samples.

use super::spec::DropoutSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Inverted dropout: kept elements are scaled by `1/(1−p)` in training; identity in eval.
pub struct Dropout {
    name: String,
    p: f32,
    seed: u64,
    /// Mask of the last training forward: 0 or 1/(1−p), one entry per element of one timestep.
    mask: Option<Vec<f32>>,
}

impl Dropout {
    /// A dropout layer from its spec; `seed` is the model seed.
    pub fn from_spec(spec: &DropoutSpec, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&spec.p) {
            return Err(Error::Spec(format!(
                "{}: dropout probability must be in [0, 1), got {}",
                spec.name, spec.p
            )));
        }
        Ok(Dropout {
            name: spec.name.clone(),
            p: spec.p,
            seed,
            mask: None,
        })
    }

    /// Drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    fn rng(&self, step: u64) -> ChaCha8Rng {
        // FNV-1a over the name keeps different dropout layers' masks independent.
        let name_hash = self.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ name_hash);
        rng.set_stream(step);
        rng
    }
}

impl Layer for Dropout {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        if !ctx.is_train() || self.p == 0.0 {
            self.mask = None;
            return Ok(input);
        }
        let t = ctx.timesteps;
        if t == 0 || input.shape().is_empty() || !input.len().is_multiple_of(t) {
            return Err(Error::shape(
                &self.name,
                format!("[T·B, ...] with T = {t}"),
                input.shape(),
            ));
        }
        let step_len = input.len() / t;
        let keep = 1.0 / (1.0 - self.p);
        let batch = input.shape()[0] / t;
        let per_sample = step_len.checked_div(batch).unwrap_or(0);
        let mut rng = self.rng(ctx.step);
        // One 32-bit word per element: sample `j` of the global batch starts at word
        // `j · per_sample` of the step's stream.
        rng.set_word_pos(u128::from(ctx.sample_offset) * per_sample as u128);
        let mask: Vec<f32> = (0..step_len)
            .map(|_| {
                if rng.random::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let scale = input.spike_scale().map(|s| s * keep);
        let shape = input.shape().to_vec();
        let mut data = input.into_vec();
        for chunk in data.chunks_exact_mut(step_len) {
            for (v, m) in chunk.iter_mut().zip(&mask) {
                *v *= m;
            }
        }
        self.mask = Some(mask);
        Ok(Tensor::from_vec(&shape, data)?.with_spike_scale(scale))
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        if self.p == 0.0 {
            return Ok(grad_output);
        }
        let mask = self.mask.as_ref().ok_or_else(|| Error::NoForwardCache {
            layer: self.name.clone(),
        })?;
        if !grad_output.len().is_multiple_of(mask.len()) {
            return Err(Error::shape(
                &self.name,
                format!("a multiple of {} elements", mask.len()),
                grad_output.shape(),
            ));
        }
        let shape = grad_output.shape().to_vec();
        let mut data = grad_output.into_vec();
        for chunk in data.chunks_exact_mut(mask.len()) {
            for (g, m) in chunk.iter_mut().zip(mask) {
                *g *= m;
            }
        }
        Tensor::from_vec(&shape, data)
    }

    fn clear_cache(&mut self) {
        self.mask = None;
    }

    crate::impl_as_any!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(p: f32) -> Dropout {
        Dropout::from_spec(
            &DropoutSpec {
                name: "d".into(),
                p,
            },
            42,
        )
        .unwrap()
    }

    #[test]
    fn mask_is_shared_across_time_and_reproducible() {
        let mut d = layer(0.5);
        let x = Tensor::full(&[2 * 3, 50], 1.0);
        let ctx = ForwardCtx::train(2).with_step(7);
        let y = d.forward(x.clone(), &ctx).unwrap();
        let (first, second) = y.data().split_at(150);
        assert_eq!(first, second, "same mask for t = 0 and t = 1");
        let dropped = first.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (40..110).contains(&dropped),
            "about half dropped, got {dropped}"
        );
        assert!(first.iter().all(|&v| v == 0.0 || v == 2.0));
        assert_eq!(layer(0.5).forward(x.clone(), &ctx).unwrap(), y);
        assert_ne!(
            layer(0.5)
                .forward(x, &ForwardCtx::train(2).with_step(8))
                .unwrap(),
            y
        );
    }

    #[test]
    fn backward_applies_the_same_mask_and_eval_is_identity() {
        let mut d = layer(0.3);
        let x = Tensor::full(&[4, 10], 1.0);
        let y = d.forward(x.clone(), &ForwardCtx::train(2)).unwrap();
        let g = d.backward(Tensor::full(&[4, 10], 1.0)).unwrap();
        assert_eq!(g, y);
        assert_eq!(d.forward(x.clone(), &ForwardCtx::eval(2)).unwrap(), x);
        assert!(Dropout::from_spec(
            &DropoutSpec {
                name: "d".into(),
                p: 1.0
            },
            0
        )
        .is_err());
    }

    #[test]
    fn a_sample_gets_the_same_mask_however_the_global_batch_is_split() {
        // T = 2, a global batch of 4 samples of 30 features, split 1 + 3 over two "ranks".
        let (t, features) = (2, 30);
        let ctx = ForwardCtx::train(t).with_step(5);
        let whole = layer(0.5)
            .forward(Tensor::full(&[t * 4, features], 1.0), &ctx)
            .unwrap();
        let head = layer(0.5)
            .forward(Tensor::full(&[t, features], 1.0), &ctx)
            .unwrap();
        let tail = layer(0.5)
            .forward(
                Tensor::full(&[t * 3, features], 1.0),
                &ctx.with_sample_offset(1),
            )
            .unwrap();
        let sample = |y: &Tensor, j: usize| y.data()[j * features..][..features].to_vec();
        assert_eq!(sample(&head, 0), sample(&whole, 0));
        for j in 0..3 {
            assert_eq!(sample(&tail, j), sample(&whole, j + 1), "sample {j}");
        }
        // The four samples do not all share one mask.
        assert_ne!(sample(&whole, 0), sample(&whole, 1));
    }
}
