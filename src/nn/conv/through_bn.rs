//! [`Conv2d`]'s backward through the following training batch norm: the conv forms `∂L/∂y`
//! from the batch norm's gradient affines as its kernels load the neuron's gradient.

use super::{Conv2d, Saved};
use crate::error::{Error, Result};
use crate::kernels::bn::GradAffine;
use crate::kernels::conv::stem_linear::{self, PlaneTaps};
use crate::kernels::conv::{self, sparse, stem, winograd};
use crate::tensor::Tensor;

impl Conv2d {
    /// True if [`Conv2d::backward_through_bn`] takes the last training forward: no bias is
    /// trained, and every gradient the conv computes runs on a kernel that can form `dY` from a
    /// following batch norm's output gradient as it loads it ([`conv::OutputGrad`]): a stem
    /// ([`stem::preferred`], input kept dense, no input gradient wanted), or a conv on spikes
    /// whose weight gradient reads the bits ([`conv::weight_grad_reads_spikes`], above the
    /// sparse kernel's density) and whose input gradient, if wanted, is Winograd.
    pub(crate) fn takes_bn_grad(&self) -> bool {
        if self.bias.as_ref().is_some_and(|b| b.trainable) {
            return false;
        }
        match &self.cache {
            Some((Saved::Dense(_), g)) => !self.input_grad && stem::preferred(g),
            Some((Saved::Spikes(bits), g)) => {
                bits.density() > sparse::wgrad_max_density(g)
                    && conv::weight_grad_reads_spikes(g)
                    && (!self.input_grad || winograd::preferred(g))
            }
            None => false,
        }
    }

    /// The backward ([`Layer::backward`]) of a conv that [`Conv2d::takes_bn_grad`], given the
    /// following training batch norm's output gradient `grad`, its input `bn_input` (this
    /// conv's output) and its per-channel [`GradAffine`]s instead of `∂L/∂y`: the same gradient
    /// bits as the batch norm's backward followed by the conv's, without writing `∂L/∂y`.
    /// Returns the input gradient (zeros if none is wanted), as [`Layer::backward`] does.
    ///
    /// [`Layer::backward`]: crate::nn::Layer::backward
    pub(crate) fn backward_through_bn(
        &mut self,
        grad: &Tensor,
        bn_input: &Tensor,
        affines: &[GradAffine],
    ) -> Result<Tensor> {
        let g = match &self.cache {
            Some((_, g)) if self.takes_bn_grad() => *g,
            _ => {
                return Err(Error::State(format!(
                    "{}: no forward the batch norm's gradient can run through",
                    self.spec.name
                )))
            }
        };
        let want = [g.n, g.c_out, g.oh, g.ow];
        for t in [grad, bn_input] {
            if t.shape() != want {
                return Err(Error::shape(
                    &self.spec.name,
                    format!("gradient {want:?}"),
                    t.shape(),
                ));
            }
        }
        if affines.len() != g.c_out {
            return Err(Error::State(format!(
                "{}: {} batch-norm affines for {} channels",
                self.spec.name,
                affines.len(),
                g.c_out
            )));
        }
        self.check_params()?;
        let (saved, _) = self.cache.take().expect("takes_bn_grad checked the cache");
        let in_shape = [g.n, g.c_in, g.h, g.w];
        let dy = conv::OutputGrad::ThroughBn {
            grad: grad.data(),
            bn_input: bn_input.data(),
            affines,
        };
        match &saved {
            Saved::Spikes(bits) if self.weight.trainable && self.input_grad => {
                // Both gradients in one pass over the batch norm's streams where it can.
                let mut dx = crate::buffer_pool::overwritable(g.n * g.in_img());
                let (w, dw) = (self.weight.value.data(), self.weight.grad.data_mut());
                conv::backward_spikes_from(&g, bits, dy, w, dw, &mut dx, &mut self.ws);
                return Tensor::from_vec(&in_shape, dx);
            }
            Saved::Dense(input) if self.weight.trainable => {
                let dw = self.weight.grad.data_mut();
                stem::backward_weight_through_bn(
                    &g,
                    input.data(),
                    grad.data(),
                    bn_input.data(),
                    affines,
                    dw,
                );
            }
            Saved::Spikes(bits) if self.weight.trainable => {
                let dw = self.weight.grad.data_mut();
                conv::backward_weight_spikes_from(&g, bits, dy, dw, &mut self.ws);
            }
            _ => {}
        }
        if !self.input_grad {
            return Ok(Tensor::zeros(&in_shape));
        }
        let mut dx = crate::buffer_pool::overwritable(g.n * g.in_img());
        conv::backward_input_from(&g, dy, self.weight.value.data(), &mut dx);
        Tensor::from_vec(&in_shape, dx)
    }

    /// The conv's input images if its weight gradient can come from [`PlaneTaps`] a fused
    /// neuron backward takes ([`stem_linear`], [`Conv2d::backward_from_stem_taps`]): it
    /// [`Conv2d::takes_bn_grad`] as a trained stem on one-channel images.
    pub(crate) fn stem_taps_images(&self) -> Option<&Tensor> {
        match &self.cache {
            Some((Saved::Dense(images), g))
                if self.weight.trainable && stem_linear::applies(g) && self.takes_bn_grad() =>
            {
                Some(images)
            }
            _ => None,
        }
    }

    /// Scratch for one [`PlaneTaps`] per plane of this conv's last output, for
    /// [`Conv2d::backward_from_stem_taps`] to take back (reused across steps).
    pub(crate) fn take_stem_taps(&mut self) -> Vec<PlaneTaps> {
        let planes = self.cache.as_ref().map_or(0, |(_, g)| g.n * g.c_out);
        let mut taps = std::mem::take(&mut self.stem_taps);
        taps.resize(planes, [0.0; 9]);
        taps
    }

    /// The backward ([`Layer::backward`]) of a conv with [`Conv2d::stem_taps_images`], from
    /// every output plane's [`PlaneTaps`] (plane order) and the following batch norm's
    /// [`GradAffine`]s: adds the weight gradient ([`stem_linear::weight_grad`], with the weight
    /// and bias the forward ran with; equal to [`Conv2d::backward_through_bn`]'s within f32
    /// rounding, not bit for bit) and returns the (unwanted) input gradient as zeros, as
    /// [`Layer::backward`] does.
    ///
    /// [`Layer::backward`]: crate::nn::Layer::backward
    pub(crate) fn backward_from_stem_taps(
        &mut self,
        taps: Vec<PlaneTaps>,
        affines: &[GradAffine],
    ) -> Result<Tensor> {
        let g = match &self.cache {
            Some((_, g)) if self.stem_taps_images().is_some() => *g,
            _ => {
                return Err(Error::State(format!(
                    "{}: no stem forward to take plane sums for",
                    self.spec.name
                )))
            }
        };
        if taps.len() != g.n * g.c_out || affines.len() != g.c_out {
            return Err(Error::State(format!(
                "{}: {} plane sums and {} batch-norm affines for {} planes of {} channels",
                self.spec.name,
                taps.len(),
                affines.len(),
                g.n * g.c_out,
                g.c_out
            )));
        }
        self.check_params()?;
        if let Some((Saved::Dense(images), _)) = self.cache.take() {
            let (w, dw) = (self.weight.value.data(), self.weight.grad.data_mut());
            let bias = self.bias.as_ref().map(|b| b.value.data());
            stem_linear::weight_grad(&g, images.data(), w, bias, &taps, affines, dw);
        }
        self.stem_taps = taps;
        Ok(Tensor::zeros(&[g.n, g.c_in, g.h, g.w]))
    }
}
