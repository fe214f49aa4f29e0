//! [`BatchNorm2d`]: batch normalization over `N·H·W` per channel (`N = T·B`: statistics pool
//! all timesteps, as in the paper's tdBN-style setup, METHOD.md §5).

use super::conv::check_param;
use super::spec::BatchNorm2dSpec;
use super::{Buffer, ForwardCtx, Layer, Param};
use crate::dist::{sync_bn, SharedCollective};
use crate::error::{Error, Result};
use crate::kernels::bn::{self, BnDims, GradAffine};
use crate::kernels::lif::ChannelAffine;
use crate::tensor::Tensor;

/// Batch normalization with PyTorch `BatchNorm2d` conventions (affine, `eps` 1e-5, momentum
/// 0.1 by default).
///
/// - Training: normalizes with the batch mean and *biased* variance, then updates
///   `running_mean`/`running_var` with momentum and the *unbiased* variance; backward flows
///   through the batch statistics. Needs more than one value per channel.
/// - Evaluation: normalizes with the running statistics, in place (the output reuses the
///   input's memory), caches nothing.
/// - [`BatchNorm2d::set_frozen_stats`]: training-mode forward/backward with the running
///   statistics held fixed (frozen BN for fine-tuning, and the eval-mode gradient of the
///   golden files).
///
/// Parameters `<name>.gamma` (init 1), `<name>.beta` (init 0); buffers `<name>.running_mean`
/// (init 0), `<name>.running_var` (init 1).
///
/// ```
/// use mpsnn::nn::{batchnorm::BatchNorm2d, spec::BatchNorm2dSpec, ForwardCtx, Layer};
/// use mpsnn::Tensor;
/// let spec = BatchNorm2dSpec { name: "bn".into(), num_features: 1, eps: 1e-5,
///                              momentum: 0.1, training: None };
/// let mut bn = BatchNorm2d::from_spec(&spec).unwrap();
/// let x = Tensor::from_vec(&[4, 1, 1, 1], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let y = bn.forward(x, &ForwardCtx::train(1)).unwrap();
/// assert!(y.data()[0] < -1.3 && y.data()[3] > 1.3); // (x − 2.5)/√1.25
/// // running mean 0.9·0 + 0.1·2.5; running var 0.9·1 + 0.1·(5/3)
/// assert!((bn.running_mean().data()[0] - 0.25).abs() < 1e-6);
/// assert!((bn.running_var().data()[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
/// ```
pub struct BatchNorm2d {
    spec: BatchNorm2dSpec,
    gamma: Param,
    beta: Param,
    running_mean: Buffer,
    running_var: Buffer,
    frozen_stats: bool,
    /// Statistics of the cached forward (`mean`, `1/√(σ² + ε)`), and scratch.
    mean: Vec<f32>,
    invstd: Vec<f32>,
    var: Vec<f32>,
    scale: Vec<f32>,
    /// Backward's per-plane sums ([`bn::plane_grad_sums`]), reused across steps.
    plane_sums: Vec<(f64, f64)>,
    cache: Option<Cached>,
    /// The next training forward may drop its input ([`Layer::set_input_recomputable`]).
    input_recomputable: bool,
    /// Synchronized statistics across ranks ([`BatchNorm2d::set_sync`]), and the global count
    /// of the cached forward when it used them.
    sync: Option<SharedCollective>,
    synced_count: Option<usize>,
}

/// What a training forward keeps for backward besides the statistics.
struct Cached {
    /// The input, unless deferred: then [`Layer::restore_input`] gives it back.
    x: Option<Tensor>,
    shape: Vec<usize>,
    dims: BnDims,
    batch_stats: bool,
}

impl BatchNorm2d {
    /// Builds the layer; fails with [`Error::Spec`] for 0 channels, `eps ≤ 0` or a momentum
    /// outside `[0, 1]`.
    pub fn from_spec(spec: &BatchNorm2dSpec) -> Result<Self> {
        let s = spec;
        if s.num_features == 0
            || s.eps.is_nan()
            || s.eps <= 0.0
            || !(0.0..=1.0).contains(&s.momentum)
        {
            return Err(Error::Spec(format!(
                "{}: batchnorm2d needs channels > 0, eps > 0 and momentum in [0, 1], got {s:?}",
                s.name
            )));
        }
        let c = s.num_features;
        Ok(BatchNorm2d {
            spec: spec.clone(),
            gamma: Param::new(format!("{}.gamma", s.name), Tensor::full(&[c], 1.0)),
            beta: Param::new(format!("{}.beta", s.name), Tensor::zeros(&[c])),
            running_mean: Buffer::new(format!("{}.running_mean", s.name), Tensor::zeros(&[c])),
            running_var: Buffer::new(format!("{}.running_var", s.name), Tensor::full(&[c], 1.0)),
            frozen_stats: false,
            mean: vec![0.0; c],
            invstd: vec![0.0; c],
            var: vec![0.0; c],
            scale: vec![0.0; c],
            plane_sums: Vec::new(),
            cache: None,
            input_recomputable: false,
            sync: None,
            synced_count: None,
        })
    }

    /// The configuration (channels, eps, momentum).
    pub fn spec(&self) -> &BatchNorm2dSpec {
        &self.spec
    }

    /// The scale γ `[C]`.
    pub fn gamma(&self) -> &Param {
        &self.gamma
    }

    /// The shift β `[C]`.
    pub fn beta(&self) -> &Param {
        &self.beta
    }

    /// The running mean `[C]`.
    pub fn running_mean(&self) -> &Tensor {
        &self.running_mean.value
    }

    /// The running (unbiased) variance `[C]`.
    pub fn running_var(&self) -> &Tensor {
        &self.running_var.value
    }

    /// When `true`, training-mode passes use (and never update) the running statistics; the
    /// gradient then treats them as constants.
    pub fn set_frozen_stats(&mut self, frozen: bool) {
        self.frozen_stats = frozen;
    }

    /// With `Some(group)`, training-mode batch statistics (and their gradient terms) are taken
    /// over the batches of all ranks of `group` together ([`crate::dist::sync_bn`]), so every
    /// rank normalizes, and updates its running statistics, with the same global values.
    /// Every rank must then run the same training steps. `None` (the default): this batch only.
    pub fn set_sync(&mut self, group: Option<SharedCollective>) {
        self.sync = group;
    }

    /// Whether the running statistics are frozen (see [`BatchNorm2d::set_frozen_stats`]).
    pub fn frozen_stats(&self) -> bool {
        self.frozen_stats
    }

    fn dims(&self, input: &[usize]) -> Result<BnDims> {
        match *input {
            [n, c, h, w] if c == self.spec.num_features => Ok(BnDims { n, c, hw: h * w }),
            _ => Err(Error::shape(
                &self.spec.name,
                format!("[N, {}, H, W]", self.spec.num_features),
                input,
            )),
        }
    }

    fn check_params(&self) -> Result<()> {
        let c = [self.spec.num_features];
        check_param(&self.gamma, &c)?;
        check_param(&self.beta, &c)?;
        for b in [&self.running_mean, &self.running_var] {
            if b.value.shape() != c {
                return Err(Error::State(format!(
                    "{}: expected shape {c:?}, got {:?}",
                    b.name,
                    b.value.shape()
                )));
            }
        }
        Ok(())
    }

    /// Fills `mean`/`invstd`/`scale` from the running statistics.
    fn use_running_stats(&mut self) {
        let eps = self.spec.eps as f64;
        self.mean.copy_from_slice(self.running_mean.value.data());
        for (r, &v) in self.invstd.iter_mut().zip(self.running_var.value.data()) {
            *r = (1.0 / (v as f64 + eps).sqrt()) as f32;
        }
        self.fill_scale();
    }

    fn fill_scale(&mut self) {
        for ((s, &g), &r) in self
            .scale
            .iter_mut()
            .zip(self.gamma.value.data())
            .zip(&self.invstd)
        {
            *s = g * r;
        }
    }
}

/// An eval batch norm's per-channel coefficients: `y = (x − mean)·scale + shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalAffine {
    /// Running mean.
    pub mean: Vec<f32>,
    /// `γ/√(running var + ε)`.
    pub scale: Vec<f32>,
    /// `β`.
    pub shift: Vec<f32>,
}

impl BatchNorm2d {
    /// The coefficients its eval forward would apply to an input of shape `input`, for a
    /// following kernel to apply instead (the same formula, so the same bits). Drops any
    /// training cache, as an eval forward does.
    pub fn eval_affine(&mut self, input: &[usize]) -> Result<EvalAffine> {
        self.dims(input)?;
        self.check_params()?;
        self.cache = None;
        self.use_running_stats();
        Ok(EvalAffine {
            mean: self.mean.clone(),
            scale: self.scale.clone(),
            shift: self.beta.value.data().to_vec(),
        })
    }

    /// The statistics half of a training forward on input `x` of shape `shape` (dims `d`):
    /// batch mean and variance (all-reduced if synced), `scale`, and the running averages; or
    /// the running statistics if frozen. Returns whether the batch's own statistics are used.
    ///
    /// `moments`, if given, are the [`bn::PlaneMoments`] of `x`'s planes (its producer took
    /// them): the statistics come from them, the same bits, without a pass over `x`.
    fn train_stats(
        &mut self,
        shape: &[usize],
        x: &[f32],
        d: BnDims,
        moments: Option<&[bn::PlaneMoments]>,
    ) -> Result<bool> {
        let batch_stats = !self.frozen_stats;
        if batch_stats {
            if d.count() < 2 {
                return Err(Error::shape(
                    &self.spec.name,
                    "more than one value per channel (N·H·W > 1) in training mode",
                    shape,
                ));
            }
            match moments {
                Some(m) => bn::stats_from_moments(m, d, &mut self.mean, &mut self.var),
                None => bn::batch_stats(x, d, &mut self.mean, &mut self.var),
            }
            self.synced_count = self.sync.as_ref().map(|c| {
                sync_bn::reduce_stats(c.as_ref(), d.count(), &mut self.mean, &mut self.var)
            });
            let eps = self.spec.eps as f64;
            for (r, &v) in self.invstd.iter_mut().zip(&self.var) {
                *r = (1.0 / (v as f64 + eps).sqrt()) as f32;
            }
            self.fill_scale();
            bn::update_running(
                self.running_mean.value.data_mut(),
                self.running_var.value.data_mut(),
                &self.mean,
                &self.var,
                self.synced_count.unwrap_or(d.count()),
                self.spec.momentum,
            );
        } else {
            self.use_running_stats();
        }
        Ok(batch_stats)
    }

    /// A training forward whose normalize is left to the consumer (a LIF that applies
    /// [`BatchNorm2d::train_affine`] as it loads `input`): computes the statistics as
    /// [`Layer::forward`] does and keeps `input` for backward (or drops it if deferred).
    /// `moments`: as [`BatchNorm2d::train_stats`]'.
    pub(crate) fn forward_stats_only(
        &mut self,
        input: &Tensor,
        moments: Option<&[bn::PlaneMoments]>,
    ) -> Result<()> {
        let d = self.dims(input.shape())?;
        self.check_params()?;
        let batch_stats = self.train_stats(input.shape(), input.data(), d, moments)?;
        self.cache = Some(Cached {
            x: None,
            shape: input.shape().to_vec(),
            dims: d,
            batch_stats,
        });
        Ok(())
    }

    /// Gives a [`BatchNorm2d::forward_stats_only`] its input to keep for backward, unless the
    /// input is deferred (then the producer rebuilds it).
    pub(crate) fn keep_input(&mut self, input: Tensor) {
        if let Some(c) = self.cache.as_mut().filter(|_| !self.input_recomputable) {
            c.x = Some(input);
        }
    }

    /// The kept (or restored) input of the last training forward.
    pub(crate) fn kept_input(&self) -> Option<&Tensor> {
        self.cache.as_ref().and_then(|c| c.x.as_ref())
    }

    /// A buffer for backward's per-plane sums of the cached forward (`N·C` entries, contents
    /// unspecified), for a fused kernel to fill ([`bn::plane_grad_sums`]) and hand back to
    /// [`BatchNorm2d::backward_from_plane_sums`]; empty without a cached forward.
    pub(crate) fn take_plane_sums(&mut self) -> Vec<(f64, f64)> {
        let planes = self.cache.as_ref().map_or(0, |c| c.dims.n * c.dims.c);
        let mut sums = std::mem::take(&mut self.plane_sums);
        sums.resize(planes, (0.0, 0.0));
        sums
    }

    /// [`Layer::backward`] with the per-plane sums already computed (from
    /// [`BatchNorm2d::take_plane_sums`]): the same bits, one pass over `grad_output` fewer.
    pub(crate) fn backward_from_plane_sums(
        &mut self,
        grad_output: Tensor,
        sums: Vec<(f64, f64)>,
    ) -> Result<Tensor> {
        self.backward_with(grad_output, Some(sums))
    }

    /// Adds γ's and β's gradients, which a backward left in the `var` and `scale` scratch.
    fn add_param_grads(&mut self) {
        for (p, g) in [(&mut self.gamma, &self.var), (&mut self.beta, &self.scale)] {
            if p.trainable {
                crate::kernels::elementwise::add_assign(p.grad.data_mut(), g);
            }
        }
    }

    /// True if [`BatchNorm2d::backward_to_grad_affines`] takes the last training forward: its
    /// input was kept and its statistics are this process's own (a synchronized batch norm
    /// corrects its gradient with a second pass).
    pub(crate) fn gives_grad_affines(&self) -> bool {
        self.synced_count.is_none() && self.kept_input().is_some()
    }

    /// The backward from the per-plane sums ([`BatchNorm2d::take_plane_sums`]) up to the input
    /// gradient, which is left to the layer before to form as it reads the output gradient:
    /// adds γ's and β's gradients and returns every channel's [`GradAffine`] and the kept input
    /// (consuming the forward cache).
    pub(crate) fn backward_to_grad_affines(
        &mut self,
        sums: Vec<(f64, f64)>,
    ) -> Result<(Vec<GradAffine>, Tensor)> {
        let Some(Cached {
            x: Some(_),
            dims: d,
            batch_stats,
            ..
        }) = &self.cache
        else {
            return Err(Error::NoForwardCache {
                layer: self.spec.name.clone(),
            });
        };
        if !self.gives_grad_affines() || sums.len() != d.n * d.c {
            return Err(Error::State(format!(
                "{}: no gradient affines from this forward or these sums",
                self.spec.name
            )));
        }
        self.check_params()?;
        // Scratch for the per-channel sums: `var` and `scale` are free once forward is done.
        let affines = bn::grad_affines(
            *d,
            &self.mean,
            &self.invstd,
            self.gamma.value.data(),
            *batch_stats,
            &sums,
            &mut self.var,
            &mut self.scale,
        );
        self.plane_sums = sums;
        let x = self.cache.take().and_then(|c| c.x).expect("checked above");
        self.add_param_grads();
        Ok((affines, x))
    }

    /// Backward, computing the per-plane sums first unless given.
    fn backward_with(
        &mut self,
        mut grad_output: Tensor,
        sums: Option<Vec<(f64, f64)>>,
    ) -> Result<Tensor> {
        let Some(Cached {
            x: Some(x),
            dims: d,
            batch_stats,
            ..
        }) = &self.cache
        else {
            return Err(Error::NoForwardCache {
                layer: self.spec.name.clone(),
            });
        };
        if grad_output.shape() != x.shape() {
            return Err(Error::shape(
                &self.spec.name,
                format!("gradient {:?}", x.shape()),
                grad_output.shape(),
            ));
        }
        self.check_params()?;
        let sums = match sums {
            Some(s) if s.len() == d.n * d.c => s,
            Some(_) => {
                return Err(Error::State(format!(
                    "{}: per-plane sums of the wrong length",
                    self.spec.name
                )))
            }
            None => {
                let mut s = std::mem::take(&mut self.plane_sums);
                s.resize(d.n * d.c, (0.0, 0.0));
                bn::grad_plane_sums(grad_output.data(), x.data(), *d, &self.mean, &mut s);
                s
            }
        };
        // Scratch for the per-channel sums: `var` and `scale` are free once forward is done.
        let synced = self.synced_count.filter(|_| *batch_stats);
        bn::backward_from_plane_sums(
            x.data(),
            grad_output.data_mut(),
            *d,
            &self.mean,
            &self.invstd,
            self.gamma.value.data(),
            *batch_stats && synced.is_none(),
            &sums,
            &mut self.var,
            &mut self.scale,
        );
        self.plane_sums = sums;
        if let (Some(total), Some(group)) = (synced, &self.sync) {
            sync_bn::finish_backward(
                group.as_ref(),
                x.data(),
                grad_output.data_mut(),
                *d,
                &self.mean,
                &self.invstd,
                self.gamma.value.data(),
                &self.var,
                &self.scale,
                total,
            );
        }
        self.cache = None;
        self.add_param_grads();
        Ok(grad_output)
    }

    /// The per-channel affine of the last training forward (the output is
    /// `(x − mean)·scale + shift`), borrowed for a kernel to apply.
    pub(crate) fn train_affine(&self) -> ChannelAffine<'_> {
        ChannelAffine {
            mean: &self.mean,
            scale: &self.scale,
            shift: self.beta.value.data(),
        }
    }
}

impl Layer for BatchNorm2d {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.dims(input).map(|_| input.to_vec())
    }

    fn forward(&mut self, mut input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let d = self.dims(input.shape())?;
        self.check_params()?;
        if !ctx.is_train() {
            self.cache = None;
            self.use_running_stats();
            let beta = self.beta.value.data();
            bn::normalize_inplace(input.data_mut(), d, &self.mean, &self.scale, beta);
            return Ok(input);
        }
        let batch_stats = self.train_stats(input.shape(), input.data(), d, None)?;
        let shape = input.shape().to_vec();
        let beta = self.beta.value.data();
        let (x, y) = if self.input_recomputable {
            // A deferred input is not kept (the producer rebuilds it at backward time), so the
            // output overwrites it: one read and one write of the activation instead of a read
            // plus a fresh buffer's fill and write. Same arithmetic as `normalize`, same bits.
            bn::normalize_inplace(input.data_mut(), d, &self.mean, &self.scale, beta);
            (None, input)
        } else {
            let mut y = crate::buffer_pool::overwritable(d.len());
            bn::normalize(input.data(), &mut y, d, &self.mean, &self.scale, beta);
            (Some(input), Tensor::from_vec(&shape, y)?)
        };
        self.cache = Some(Cached {
            x,
            shape,
            dims: d,
            batch_stats,
        });
        Ok(y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        self.backward_with(grad_output, None)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.gamma);
        f(&mut self.beta);
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut Buffer)) {
        f(&mut self.running_mean);
        f(&mut self.running_var);
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }

    /// True after a training forward, also with a deferred input (which only a caller that
    /// can restore it defers, [`Layer::set_input_recomputable`]).
    fn can_recompute_output(&self) -> bool {
        self.cache.is_some()
    }

    /// `y` again from the cached (or restored) `x` and the statistics of that forward
    /// (unchanged until this layer's backward, which runs after its consumer's).
    fn recompute_output(&mut self) -> Option<Tensor> {
        let Cached {
            x: Some(x),
            dims: d,
            ..
        } = self.cache.as_ref()?
        else {
            return None;
        };
        let d = *d;
        let mut y = crate::buffer_pool::overwritable(d.len());
        bn::normalize(
            x.data(),
            &mut y,
            d,
            &self.mean,
            &self.scale,
            self.beta.value.data(),
        );
        Tensor::from_vec(x.shape(), y).ok()
    }

    /// If `yes`, the next training forward keeps only its statistics, not its input (the
    /// largest cache of a spiking conv net): the caller rebuilds the input from its producer
    /// and hands it back with [`Layer::restore_input`] before backward.
    fn set_input_recomputable(&mut self, yes: bool) {
        self.input_recomputable = yes;
    }

    fn input_deferred(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.x.is_none())
    }

    fn restore_input(&mut self, input: Tensor) -> Result<()> {
        let c = match &mut self.cache {
            Some(c) if c.x.is_none() => c,
            _ => {
                return Err(Error::State(format!(
                    "{}: input was not deferred",
                    self.spec.name
                )))
            }
        };
        if input.shape() != &c.shape[..] {
            return Err(Error::shape(
                &self.spec.name,
                format!("restored input of shape {:?}", c.shape),
                input.shape(),
            ));
        }
        c.x = Some(input);
        Ok(())
    }

    crate::impl_as_any!();
}
