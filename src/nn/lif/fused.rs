//! The fused plane-wise forwards of [`Lif`]: in eval with the layers around it
//! ([`EvalStages`]), in training with a repeat before and a max pool after it, and that
//! training forward's backward ([`crate::kernels::lif::forward_train_planes`]).

use super::{Cached, FusedInput, Lif};
use crate::error::{Error, Result};
use crate::kernels::conv::sparse::SpikeBits;
use crate::kernels::conv::stem_linear::PlaneTaps;
use crate::kernels::lif::{self as kernel, Addend, BackwardSums, ChannelAffine, PlaneStages};
use crate::kernels::pool::PoolGeom;
use crate::neuron::step::StepParams;
use crate::nn::batchnorm::EvalAffine;
use crate::nn::ForwardCtx;
use crate::tensor::Tensor;
use std::sync::Arc;

/// What [`Lif::forward_eval_planes`] runs around the LIF step, in order: an eval batch norm's
/// `affine`, the repeat of a one-step input (`repeated`: N = B, direct encoding), the
/// `addend` (a residual block's shortcut, `[N, C, H, W]` as the input, not repeated), then
/// after the step max pooling of each output plane (`pool`). With `pack_output` the output
/// carries its spikes bit-packed ([`Tensor::spike_bits`]) for a layer after it that reads
/// them ([`crate::nn::Layer::reads_spike_bits`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalStages<'a> {
    /// A batch norm's eval coefficients, applied first.
    pub affine: Option<&'a EvalAffine>,
    /// The input is one step that every step reads.
    pub repeated: bool,
    /// Added to the input after the affine.
    pub addend: Option<Addend<'a>>,
    /// Max pooling of the output planes.
    pub pool: Option<PoolGeom>,
    /// Attach the output's bits.
    pub pack_output: bool,
}

impl Lif {
    /// True if an eval forward may be fused with its neighbours
    /// ([`Lif::forward_eval_planes`]): not while the recorder needs the membrane.
    pub fn can_fuse_eval(&self) -> bool {
        self.recorder.is_none()
    }

    /// The eval forward fused with the layers around it ([`EvalStages`]), one `H×W` plane at
    /// a time ([`kernel::forward_eval_planes`]), `input` being `[N, C, H, W]`. Bit-identical
    /// to running the layers one by one; sets [`Lif::stats`] as [`crate::nn::Layer::forward`] does.
    /// Fails on a shape that does not fit, or while the recorder is on.
    pub fn forward_eval_planes(
        &mut self,
        input: Tensor,
        ctx: &ForwardCtx,
        around: &EvalStages,
    ) -> Result<Tensor> {
        if ctx.is_train() || !self.can_fuse_eval() {
            return Err(Error::State(format!(
                "{}: a fused eval forward needs eval mode and no recorder",
                self.name
            )));
        }
        let t = ctx.timesteps;
        let (repeated, pool) = (around.repeated, around.pool);
        let affine = around.affine.map(|a| ChannelAffine {
            mean: &a.mean,
            scale: &a.scale,
            shift: &a.shift,
        });
        let (mut stages, batch) = self.plane_stages(input.shape(), t, affine, repeated, pool)?;
        if let Some(a) = around.addend {
            self.check_addend(&stages, t, a)?;
            stages.addend = Some(a);
        }
        let (params, u0) = self.step_params();
        self.drop_forward_state();
        let out_shape = stages_output_shape(&stages, t, batch);
        let scale = params.out_scale;
        let mut words = (around.pack_output && scale.is_finite())
            .then(|| vec![0u64; t * stages.planes * stages.out_plane_words()]);
        let bits = words.as_deref_mut();
        let (out, sums) = if !repeated && pool.is_none() {
            let mut io = input;
            let sums =
                kernel::forward_eval_planes_in_place(&params, u0, t, &stages, io.data_mut(), bits);
            (io.reshape(&out_shape)?, sums)
        } else {
            let mut out = overwritable_tensor(&out_shape)?;
            let (x, y) = (input.data(), out.data_mut());
            let sums = kernel::forward_eval_planes(&params, u0, t, &stages, x, y, bits);
            (out, sums)
        };
        let (c, h, w) = (stages.channels, stages.height, stages.width);
        self.set_stats(&sums, t, batch * c * h * w);
        let [n, c, oh, ow] = out_shape;
        let out = out.with_spike_scale(Some(scale));
        Ok(match words {
            Some(words) => {
                let bits = SpikeBits::from_words(n, c, oh * ow, scale, words);
                out.with_spike_bits(Arc::new(bits))
            }
            None => out,
        })
    }

    /// `Ok` if `addend` fits `stages` over `t` steps (a shape error otherwise).
    fn check_addend(&self, stages: &PlaneStages, t: usize, addend: Addend) -> Result<()> {
        let planes = t * stages.planes;
        let hw = stages.height * stages.width;
        let (fits, got) = match addend {
            Addend::Dense(d) => (d.len() == planes * hw, format!("{} values", d.len())),
            Addend::Spikes {
                words, plane_words, ..
            } => (
                plane_words == hw.div_ceil(64) && words.len() == planes * plane_words,
                format!("{} words, {plane_words} per plane", words.len()),
            ),
        };
        if fits && !stages.repeated {
            return Ok(());
        }
        Err(Error::ShapeMismatch {
            layer: self.name.clone(),
            expected: format!("an addend of {planes} planes of {hw} elements, input not repeated"),
            got,
        })
    }

    /// True if the last training forward ran fused ([`Lif::forward_train_planes`]) and its
    /// backward has not run yet.
    pub fn has_fused_cache(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.fused.is_some())
    }

    /// True if a training forward may be fused with its neighbours
    /// ([`Lif::forward_train_planes`]): not while the recorder needs the membrane.
    pub fn can_fuse_train(&self) -> bool {
        self.recorder.is_none()
    }

    /// The training forward fused with a repeat before it (`repeated`: `input` is one step
    /// `[B, C, H, W]` that every step reads) and a max pool after it (`pool`), run plane-wise
    /// ([`kernel::forward_train_planes`]). Keeps only `input` (not a membrane tape, not the
    /// pool's argmax); [`Lif::backward_train_planes`] rebuilds the rest. Output, statistics,
    /// MP-Init update and, after the backward, every gradient are bit-identical to running
    /// the layers one by one. Fails in eval mode, while the recorder is on, or on a shape that
    /// does not fit.
    pub fn forward_train_planes(
        &mut self,
        input: Tensor,
        ctx: &ForwardCtx,
        repeated: bool,
        pool: Option<PoolGeom>,
    ) -> Result<Tensor> {
        let out = self.train_planes_forward(&input, None, ctx, repeated, pool)?;
        if let Some(f) = self.cache.as_mut().and_then(|c| c.fused.as_mut()) {
            f.input = Some(input);
        }
        Ok(out)
    }

    /// [`Lif::forward_train_planes`] on a training batch norm's input `x`, the neuron applying
    /// the batch norm's `affine` to each task's planes in cache (the normalized activation is
    /// never written). Keeps nothing: the batch norm keeps `x`, and
    /// [`Lif::backward_train_planes_affine`] borrows it back.
    pub fn forward_train_planes_affine(
        &mut self,
        x: &Tensor,
        affine: ChannelAffine,
        ctx: &ForwardCtx,
        repeated: bool,
        pool: Option<PoolGeom>,
    ) -> Result<Tensor> {
        self.train_planes_forward(x, Some(affine), ctx, repeated, pool)
    }

    fn train_planes_forward(
        &mut self,
        input: &Tensor,
        affine: Option<ChannelAffine>,
        ctx: &ForwardCtx,
        repeated: bool,
        pool: Option<PoolGeom>,
    ) -> Result<Tensor> {
        if !ctx.is_train() || !self.can_fuse_train() {
            return Err(Error::State(format!(
                "{}: forward_train_planes needs training mode and no recorder",
                self.name
            )));
        }
        let t = ctx.timesteps;
        let (stages, batch) = self.plane_stages(input.shape(), t, affine, repeated, pool)?;
        let (params, u0) = self.step_params();
        self.drop_forward_state();
        let out_shape = stages_output_shape(&stages, t, batch);
        let mut out = overwritable_tensor(&out_shape)?;
        let sums =
            kernel::forward_train_planes(&params, u0, t, &stages, input.data(), out.data_mut());
        let (c, h, w) = (stages.channels, stages.height, stages.width);
        self.set_stats(&sums, t, batch * c * h * w);
        self.update_mu(&sums);
        self.cache = Some(Cached {
            shape: vec![t * batch, c, h, w],
            timesteps: t,
            params,
            derived: self.derived(),
            u0,
            deferred: false,
            restored: false,
            fused: Some(FusedInput {
                input: None,
                repeated,
                pool,
            }),
        });
        Ok(out.with_spike_scale(Some(params.out_scale)))
    }

    /// Backward of [`Lif::forward_train_planes`]: `grad_output` is `∂L/∂output` (pooled
    /// shape); returns `∂L/∂input` (summed over the steps if the input was repeated) and adds
    /// the θ and τ gradients. Frees the kept input.
    pub fn backward_train_planes(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let input = self
            .cache
            .as_mut()
            .and_then(|c| c.fused.as_mut())
            .and_then(|f| f.input.take());
        let Some(input) = input else {
            return Err(self.not_fused());
        };
        let dx = self.train_planes_backward(grad_output, &input, None, None);
        if dx.is_err() {
            // A rejected gradient loses nothing: the forward's input stays for a retry.
            if let Some(f) = self.cache.as_mut().and_then(|c| c.fused.as_mut()) {
                f.input = Some(input);
            }
        }
        dx
    }

    /// Backward of [`Lif::forward_train_planes_affine`], given the same `x` and `affine`:
    /// returns the gradient with respect to the affine's output (the batch norm's output
    /// gradient), summed over the steps if the input was repeated, and adds the θ and τ
    /// gradients. `bn_sums`, if given, gets the batch norm's per-plane backward sums
    /// ([`kernel::backward_train_planes`]).
    pub fn backward_train_planes_affine(
        &mut self,
        grad_output: Tensor,
        x: &Tensor,
        affine: ChannelAffine,
        bn_sums: Option<&mut [(f64, f64)]>,
    ) -> Result<Tensor> {
        self.train_planes_backward(grad_output, x, Some(affine), bn_sums)
    }

    fn not_fused(&self) -> Error {
        Error::State(format!("{}: the last forward was not fused", self.name))
    }

    fn train_planes_backward(
        &mut self,
        grad_output: Tensor,
        input: &Tensor,
        affine: Option<ChannelAffine>,
        bn_sums: Option<&mut [(f64, f64)]>,
    ) -> Result<Tensor> {
        let mut dx = crate::buffer_pool::overwritable(input.len());
        self.run_train_planes_backward(&grad_output, input, affine, |p, u0, t, stages| {
            let (x, dy) = (input.data(), grad_output.data());
            kernel::backward_train_planes(p, u0, t, stages, x, dy, &mut dx, bn_sums)
        })?;
        Tensor::from_vec(input.shape(), dx)
    }

    /// Backward of [`Lif::forward_train_planes_affine`] (the same `x` and `affine`) for a
    /// neuron whose batch norm follows a one-channel 3×3 stem conv: instead of the batch norm's
    /// output gradient, every plane's [`PlaneTaps`] against the conv's input `images`
    /// (`[N, 1, H, W]`, N as `x`'s) go to `taps` (one per plane of `x`), with the batch norm's
    /// per-plane sums to `bn_sums` ([`kernel::backward_train_planes_to_stem`]); adds the θ and
    /// τ gradients.
    pub fn backward_train_planes_to_stem(
        &mut self,
        grad_output: Tensor,
        x: &Tensor,
        affine: ChannelAffine,
        bn_sums: &mut [(f64, f64)],
        images: &Tensor,
        taps: &mut [PlaneTaps],
    ) -> Result<()> {
        let (xs, is) = (x.shape(), images.shape());
        if is.len() != 4 || xs.len() != 4 || (is[0], is[1], &is[2..]) != (xs[0], 1, &xs[2..]) {
            return Err(Error::shape(
                &self.name,
                format!(
                    "stem images [{}, 1, H, W] as the input's",
                    xs.first().unwrap_or(&0)
                ),
                is,
            ));
        }
        if taps.len() * xs[2] * xs[3] != x.len() || bn_sums.len() != taps.len() {
            return Err(Error::State(format!(
                "{}: {} stem taps and {} batch-norm sums for {} planes",
                self.name,
                taps.len(),
                bn_sums.len(),
                xs[0] * xs[1]
            )));
        }
        self.run_train_planes_backward(&grad_output, x, Some(affine), |p, u0, t, stages| {
            let (xd, dy) = (x.data(), grad_output.data());
            let images = images.data();
            kernel::backward_train_planes_to_stem(p, u0, t, stages, xd, dy, bn_sums, images, taps)
        })
    }

    /// Checks the cached fused forward and the gradient's shape against `input`, runs
    /// `kernel` on the cached parameters and the stages, drops the cache and adds the θ and τ
    /// gradients.
    fn run_train_planes_backward(
        &mut self,
        grad_output: &Tensor,
        input: &Tensor,
        affine: Option<ChannelAffine>,
        kernel: impl FnOnce(&StepParams, f32, usize, &PlaneStages) -> BackwardSums,
    ) -> Result<()> {
        let c = self.cached()?;
        let Some(f) = &c.fused else {
            return Err(self.not_fused());
        };
        let t = c.timesteps;
        let (stages, batch) = self.plane_stages(input.shape(), t, affine, f.repeated, f.pool)?;
        let want = stages_output_shape(&stages, t, batch);
        if grad_output.shape() != want {
            return Err(Error::shape(
                &self.name,
                format!("gradient of shape {want:?}"),
                grad_output.shape(),
            ));
        }
        let sums = kernel(&c.params, c.u0, t, &stages);
        let derived = c.derived;
        self.cache = None;
        self.add_param_grads(&sums, &derived);
        Ok(())
    }

    /// The kernel's view of an `[N, C, H, W]` input and the fused stages, and the batch B.
    fn plane_stages<'a>(
        &self,
        shape: &[usize],
        t: usize,
        affine: Option<ChannelAffine<'a>>,
        repeated: bool,
        pool: Option<PoolGeom>,
    ) -> Result<(PlaneStages<'a>, usize)> {
        let &[n, c, h, w] = shape else {
            return Err(Error::shape(&self.name, "[N, C, H, W]", shape));
        };
        if t == 0 || (!repeated && !n.is_multiple_of(t)) {
            return Err(Error::shape(
                &self.name,
                format!("[N, C, H, W] with T = {t} dividing N"),
                shape,
            ));
        }
        if affine.is_some_and(|a| [a.mean, a.scale, a.shift].iter().any(|v| v.len() != c))
            || pool.is_some_and(|g| (g.planes, g.h, g.w) != (1, h, w))
        {
            return Err(Error::shape(
                &self.name,
                "planes matching the fused stages",
                shape,
            ));
        }
        let batch = if repeated { n } else { n / t };
        let stages = PlaneStages {
            planes: batch * c,
            channels: c,
            height: h,
            width: w,
            repeated,
            affine,
            pool,
            addend: None,
        };
        Ok((stages, batch))
    }
}

/// `[T·B, C, OH, OW]`: the output of the fused stages.
fn stages_output_shape(stages: &PlaneStages, t: usize, batch: usize) -> [usize; 4] {
    let (oh, ow) = stages
        .pool
        .map_or((stages.height, stages.width), |g| (g.oh, g.ow));
    [t * batch, stages.channels, oh, ow]
}

/// An output tensor whose every element the kernel writes (its initial values are unspecified).
fn overwritable_tensor(shape: &[usize; 4]) -> Result<Tensor> {
    Tensor::from_vec(
        shape,
        crate::buffer_pool::overwritable(shape.iter().product()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::spec::LifSpec;

    /// A fused training backward given a gradient of the wrong shape fails without losing the
    /// forward's input: the right gradient afterwards still gets the input gradient.
    #[test]
    fn a_rejected_gradient_keeps_the_fused_input() {
        let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
        let ctx = ForwardCtx::train(2);
        let pool = PoolGeom::new(1, 4, 4, 2, 2, 0);
        let input = Tensor::from_vec(&[4, 2, 4, 4], vec![1.5; 128]).unwrap();
        let out = lif.forward_train_planes(input, &ctx, false, pool).unwrap();
        let wrong = Tensor::from_vec(&[4, 2, 2, 3], vec![1.0; 48]).unwrap();
        let err = lif.backward_train_planes(wrong).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let grad = Tensor::from_vec(out.shape(), vec![1.0; out.len()]).unwrap();
        let dx = lif.backward_train_planes(grad).unwrap();
        assert_eq!(dx.shape(), &[4, 2, 4, 4]);
        assert!(
            dx.data().iter().any(|&g| g != 0.0),
            "the gradient reaches the input"
        );
    }

    /// An addend that does not fit the input, or one on a repeated input, is a shape error
    /// before any kernel runs; one that fits is added.
    #[test]
    fn a_misfitting_addend_is_a_shape_error() {
        let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
        let ctx = ForwardCtx::eval(2);
        let input = || Tensor::from_vec(&[4, 2, 3, 3], vec![0.5; 72]).unwrap();
        let short = vec![0.0; 71];
        let run = |lif: &mut Lif, addend, repeated| {
            let around = EvalStages {
                addend: Some(addend),
                repeated,
                ..EvalStages::default()
            };
            lif.forward_eval_planes(input(), &ctx, &around)
        };
        let err = run(&mut lif, Addend::Dense(&short), false).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let words = vec![0u64; 7]; // 8 planes of one word each would fit
        let spikes = Addend::Spikes {
            words: &words,
            plane_words: 1,
            scale: 1.0,
        };
        assert!(matches!(
            run(&mut lif, spikes, false),
            Err(Error::ShapeMismatch { .. })
        ));
        let fits = vec![0.0; 72];
        assert!(matches!(
            run(&mut lif, Addend::Dense(&fits), true),
            Err(Error::ShapeMismatch { .. })
        ));
        let all = vec![u64::MAX; 8];
        let fitting = Addend::Spikes {
            words: &all,
            plane_words: 1,
            scale: 10.0,
        };
        let out = run(&mut lif, fitting, false).unwrap();
        assert!(out.data().iter().all(|&v| v != 0.0), "every bit adds 10");
        let big = vec![10.0; 72];
        let out = run(&mut lif, Addend::Dense(&big), false).unwrap();
        assert!(
            out.data().iter().all(|&v| v != 0.0),
            "a large addend fires every neuron"
        );
    }
}
