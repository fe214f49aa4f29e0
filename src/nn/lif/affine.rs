//! The training forward of a [`Lif`] that applies the batch norm before it as it loads its
//! input ([`kernel::forward_affine`]), and that forward's tape rebuild.
//!
//! Why: layer by layer, a batch norm before a deferred neuron writes its normalized output in
//! the forward and again when backward rebuilds the neuron's input, and the neuron reads it
//! each time: two passes over the activation per forward, both avoided here. The neuron's
//! input is deferred as in [`crate::nn::Sequential`]'s recompute: no tape until backward.

use super::{Cached, Lif};
use crate::error::{Error, Result};
use crate::kernels::lif::{self as kernel, ChannelAffine};
use crate::neuron::step::StepParams;
use crate::nn::ForwardCtx;
use crate::tensor::Tensor;

impl Lif {
    /// True if a training forward on an input of shape `shape` (`[T·B, C, H, W]`) may take
    /// the batch norm before it ([`Lif::forward_affine`]): no recorder (it needs the
    /// membrane), and `H·W` a multiple of the kernel's vector groups
    /// ([`kernel::affine_fits`]).
    pub fn can_take_affine(&self, shape: &[usize]) -> bool {
        self.recorder.is_none() && shape.len() == 4 && kernel::affine_fits(shape[2] * shape[3])
    }

    /// The training forward on `(x − mean[c])·scale[c] + shift[c]` (`affine`, a batch norm's
    /// training coefficients) without that activation being written: the output is the same
    /// bits as normalizing and calling [`crate::nn::Layer::forward`] with a deferred input, and
    /// so are the statistics and the MP-Init update. No tape is kept: backward needs
    /// [`Lif::restore_affine`] with the same `x` and `affine` first.
    ///
    /// Fails outside training, with the recorder on, or on a shape [`Lif::can_take_affine`]
    /// rejects or `affine` does not fit.
    pub fn forward_affine(
        &mut self,
        x: &Tensor,
        affine: &ChannelAffine,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let t = ctx.timesteps;
        let shape = x.shape().to_vec();
        self.check_affine_input(&shape, t, affine)?;
        if !ctx.is_train() {
            return Err(Error::State(format!(
                "{}: a forward through a batch norm's affine is a training forward",
                self.name
            )));
        }
        let derived = self.derived();
        let params = StepParams::new(&derived, self.surrogate, self.spec.reset);
        let (_, u0) = self.step_params();
        self.cache = None;
        self.free_tape();
        let plane = shape[2] * shape[3];
        let mut out = crate::buffer_pool::overwritable(x.len());
        let sums = kernel::forward_affine(
            &params,
            u0,
            t,
            x.data(),
            affine,
            plane,
            Some(&mut out),
            None,
        );
        self.set_stats(&sums, t, x.len() / t);
        self.update_mu(&sums);
        self.cache = Some(Cached {
            shape: shape.clone(),
            timesteps: t,
            params,
            derived,
            u0,
            deferred: true,
            restored: false,
            fused: None,
        });
        Ok(Tensor::from_vec(&shape, out)?.with_spike_scale(Some(params.out_scale)))
    }

    /// Rebuilds the tape of the last [`Lif::forward_affine`] from the same `x` and `affine`
    /// (as [`crate::nn::Layer::restore_input`] does from the normalized input); the next
    /// backward frees it.
    pub fn restore_affine(&mut self, x: &Tensor, affine: &ChannelAffine) -> Result<()> {
        let c = self.cached()?;
        if !c.deferred {
            return Err(Error::State(format!(
                "{}: input was not deferred",
                self.name
            )));
        }
        let (params, u0, t, shape) = (c.params, c.u0, c.timesteps, c.shape.clone());
        if x.shape() != &shape[..] {
            return Err(Error::shape(
                &self.name,
                format!("recomputed input of shape {shape:?}"),
                x.shape(),
            ));
        }
        self.check_affine_input(&shape, t, affine)?;
        self.tape
            .supply_membrane(crate::buffer_pool::overwritable(x.len()));
        let plane = shape[2] * shape[3];
        kernel::forward_affine(
            &params,
            u0,
            t,
            x.data(),
            affine,
            plane,
            None,
            Some(&mut self.tape),
        );
        if let Some(c) = &mut self.cache {
            c.deferred = false;
            c.restored = true;
        }
        Ok(())
    }

    /// `Ok` if `shape` over `t` steps and `affine` fit [`kernel::forward_affine`].
    fn check_affine_input(&self, shape: &[usize], t: usize, affine: &ChannelAffine) -> Result<()> {
        let c = shape.get(1).copied().unwrap_or(0);
        let fits = self.can_take_affine(shape)
            && t > 0
            && shape[0].is_multiple_of(t)
            && [affine.mean, affine.scale, affine.shift]
                .iter()
                .all(|v| v.len() == c);
        if fits {
            return Ok(());
        }
        Err(Error::shape(
            &self.name,
            format!(
                "[T·B, C, H, W] with T = {t} dividing T·B, H·W a multiple of 16, no recorder \
                 and C = {} affine coefficients",
                affine.mean.len()
            ),
            shape,
        ))
    }
}
