//! [`Lif`]: a multi-step LIF layer with learnable θ = softplus(k) and 1/τ = sigmoid(w), the
//! surrogate family of METHOD.md §3, and MP-Init (§4).
//!
//! The input is `[T·B, ...]` (time-major, T from [`ForwardCtx::timesteps`]); the layer views
//! it as `[T, N]` with N = B·C·H·W and runs all T steps in one fused kernel call
//! ([`crate::kernels::lif`]), in place. The output is θ·S for TrSG and S for AS/RS-SG, with
//! the tensor's spike hint set accordingly.
//!
//! Memory kept for backward: M as f32 (4 bytes per neuron-step) and nothing else; the spikes
//! are recomputed from M (`S = 1[M ≥ θ]`), `U[t−1]` from `M[t−1]` and `S[t−1]`, and I − `U[t−1]`
//! from `M − U[t−1] = λ·(I − U[t−1])`. Storing the spikes as well (1 bit or 1 byte each) is
//! possible with [`Lif::set_spike_storage`] and measured no faster; see [`SpikeStorage`].

use super::spec::LifSpec;
use super::{Buffer, ForwardCtx, Layer, Param};
use crate::dist::SharedCollective;
use crate::error::{Error, Result};
use crate::kernels::lif::{self as kernel, SpikeStorage, Tape};
use crate::kernels::pool::PoolGeom;
use crate::neuron::mp_init;
use crate::neuron::params::{k_from_theta, w_from_tau, Derived};
use crate::neuron::recorder::{MembraneHistogram, RecorderConfig};
use crate::neuron::step::StepParams;
use crate::neuron::surrogate::Surrogate;
use crate::tensor::Tensor;

mod affine;
mod fused;
pub use fused::EvalStages;

/// Statistics of the most recent forward pass (training or eval).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LifStats {
    /// Mean of S over all T·N neuron-steps.
    pub firing_rate: f64,
    /// Fraction of the N neurons that spiked at least once.
    pub active_fraction: f64,
    /// The MP-Init batch statistic: mean `U[T]` over active neurons (0 if none).
    pub mean_u_active: f64,
    /// Neurons per timestep N = B·C·H·W.
    pub neurons: usize,
    /// Timesteps T.
    pub timesteps: usize,
}

/// What a training forward leaves for backward besides the tape.
#[derive(Clone, Debug)]
struct Cached {
    shape: Vec<usize>,
    timesteps: usize,
    params: StepParams,
    derived: Derived,
    u0: f32,
    /// The tape was not written: backward needs the input again
    /// ([`Layer::restore_input`]).
    deferred: bool,
    /// The tape was written by [`Layer::restore_input`]: backward frees it.
    restored: bool,
    /// A fused forward ([`Lif::forward_train_planes`]) wrote no tape; this is what its backward
    /// rebuilds from.
    fused: Option<FusedInput>,
}

/// The input of a fused training forward and the stages around the LIF.
#[derive(Clone, Debug)]
struct FusedInput {
    /// The kept input; `None` if the batch norm before the neuron keeps it (a forward through
    /// its affine): the backward borrows it back.
    input: Option<Tensor>,
    repeated: bool,
    pool: Option<PoolGeom>,
}

/// A multi-step LIF layer; see the module docs.
pub struct Lif {
    name: String,
    spec: LifSpec,
    surrogate: Surrogate,
    k: Param,
    w: Param,
    mu: Buffer,
    tape: Tape,
    cache: Option<Cached>,
    stats: LifStats,
    recorder: Option<MembraneHistogram>,
    input_recomputable: bool,
    /// Ranks whose MP-Init statistics are pooled ([`Lif::set_sync`]).
    sync: Option<SharedCollective>,
}

impl Lif {
    /// Builds the layer: `<name>.k` = softplus⁻¹(θ0), `<name>.w` = −ln(τ0 − 1) (trainable per
    /// `learn_theta` / `learn_tau`), buffer `<name>.mu` = `spec.mu`. Fails on θ0 ≤ 0, τ0 ≤ 1,
    /// γ ≤ 0 or a non-finite μ.
    ///
    /// ```
    /// use mpsnn::nn::{lif::Lif, spec::LifSpec, ForwardCtx, Layer};
    /// use mpsnn::Tensor;
    /// let mut lif = Lif::from_spec(&LifSpec::new("lif1")).unwrap(); // TrSG, θ0 = 1, τ0 = 2
    /// // T = 2 steps of B = 1 sample with 3 neurons; λ = 1/2, U[0] = μ = 0.
    /// let x = Tensor::from_vec(&[2, 3], vec![2.5, 0.2, 1.0, 0.0, 0.2, 2.0]).unwrap();
    /// let y = lif.forward(x, &ForwardCtx::train(2)).unwrap();
    /// // M[1] = [1.25, 0.1, 0.5], M[2] = [0.125, 0.15, 1.25]: TrSG emits θ·S.
    /// let th = lif.theta();
    /// assert_eq!(y.data(), &[th, 0.0, 0.0, 0.0, 0.0, th]);
    /// assert_eq!(y.spike_scale(), Some(th));
    /// // MP-Init: U[T] of the two active neurons is 0.125 and 0.25 → μ = 0.1·0.1875.
    /// assert!((lif.mu() - 0.01875).abs() < 1e-6);
    /// ```
    pub fn from_spec(spec: &LifSpec) -> Result<Lif> {
        let surrogate = Surrogate::new(spec.surrogate, spec.shape, spec.gamma)?;
        if !spec.mu.is_finite() {
            return Err(Error::Spec(format!("LIF {}: mu must be finite", spec.name)));
        }
        let name = spec.name.clone();
        let k = Param::new(
            format!("{name}.k"),
            Tensor::scalar(k_from_theta(spec.theta0)?),
        )
        .trainable(spec.learn_theta);
        let w = Param::new(format!("{name}.w"), Tensor::scalar(w_from_tau(spec.tau0)?))
            .trainable(spec.learn_tau);
        Ok(Lif {
            mu: Buffer::new(format!("{name}.mu"), Tensor::scalar(spec.mu)),
            name,
            spec: spec.clone(),
            surrogate,
            k,
            w,
            tape: Tape::new(SpikeStorage::default()),
            cache: None,
            stats: LifStats::default(),
            recorder: None,
            input_recomputable: false,
            sync: None,
        })
    }

    /// The spec the layer was built from (its θ0, τ0, μ fields are initial values).
    pub fn config(&self) -> &LifSpec {
        &self.spec
    }

    /// The current θ, λ and chain-rule factors, from the current `k`, `w`.
    pub fn derived(&self) -> Derived {
        Derived::from_raw(self.k.value.data()[0], self.w.value.data()[0])
    }

    /// The threshold θ = softplus(k).
    pub fn theta(&self) -> f32 {
        self.derived().theta
    }

    /// The decay λ = 1/τ = sigmoid(w).
    pub fn lambda(&self) -> f32 {
        self.derived().lambda
    }

    /// The time constant τ = 1/λ.
    pub fn tau(&self) -> f64 {
        self.derived().tau()
    }

    /// The MP-Init potential μ (used as `U[0]` when MP-Init is on).
    pub fn mu(&self) -> f32 {
        self.mu.value.data()[0]
    }

    /// Statistics of the last forward pass.
    pub fn stats(&self) -> LifStats {
        self.stats
    }

    /// Chooses how spikes are kept for backward (takes effect at the next forward).
    pub fn set_spike_storage(&mut self, storage: SpikeStorage) {
        if storage != self.tape.storage() {
            self.tape = Tape::new(storage);
            self.cache = None;
        }
    }

    /// Turns the membrane recorder on (with a fresh histogram) or off. When on, every forward,
    /// training or eval, adds its M to [`Lif::histogram`]; eval then also writes M to the
    /// layer's scratch tape (no backward is possible after it, as usual for eval).
    pub fn set_recorder(&mut self, config: Option<RecorderConfig>) {
        self.recorder = config.map(MembraneHistogram::new);
    }

    /// With `Some(group)`, each training forward's MP-Init statistic is pooled over all ranks
    /// of `group` — `μ ← 0.9·μ + 0.1·ΣΣU[T]/Σ active` over every rank's active neurons, exactly
    /// the single-process update for the global batch — so μ stays identical on every rank.
    /// Every rank must then run the same training steps. `None` (the default): this batch only.
    pub fn set_sync(&mut self, group: Option<SharedCollective>) {
        self.sync = group;
    }

    /// The recorder's histogram, if recording.
    pub fn histogram(&self) -> Option<&MembraneHistogram> {
        self.recorder.as_ref()
    }

    /// M `[T·B, ...]` (pre-spike membrane, input shape) of the last training forward.
    pub fn membrane(&self) -> Result<Tensor> {
        let c = self.cached_tape()?;
        Tensor::from_vec(&c.shape, self.tape.membrane().to_vec())
    }

    /// `U[T]` `[B, ...]` (post-reset potential after the last step) of the last training forward.
    pub fn last_potential(&self) -> Result<Tensor> {
        let c = self.cached_tape()?;
        let mut shape = c.shape.clone();
        shape[0] /= self.tape.timesteps();
        let mut u = Tensor::zeros(&shape);
        self.tape.last_potential(&c.params, u.data_mut());
        Ok(u)
    }

    fn cached(&self) -> Result<&Cached> {
        self.cache.as_ref().ok_or_else(|| Error::NoForwardCache {
            layer: self.name.clone(),
        })
    }

    /// The tape of a forward that wrote one (not deferred).
    fn cached_tape(&self) -> Result<&Cached> {
        match self.cached()? {
            c if c.deferred || c.fused.is_some() => Err(Error::NoForwardCache {
                layer: self.name.clone(),
            }),
            c => Ok(c),
        }
    }

    fn set_stats(&mut self, sums: &kernel::ForwardSums, t: usize, n: usize) {
        self.stats = LifStats {
            firing_rate: sums.spikes as f64 / (t * n).max(1) as f64,
            active_fraction: sums.active as f64 / n.max(1) as f64,
            mean_u_active: mp_init::batch_mean(sums.sum_u_active, sums.active),
            neurons: n,
            timesteps: t,
        };
    }

    /// Forgets the last training forward and frees its tape (a fused forward writes none).
    fn drop_forward_state(&mut self) {
        self.cache = None;
        self.free_tape();
    }

    /// Frees the tape, giving its membrane buffer back to [`crate::buffer_pool`].
    fn free_tape(&mut self) {
        if self.tape.heap_bytes() > 0 {
            crate::buffer_pool::give_back(self.tape.take_membrane());
        }
    }

    /// The step parameters and `U[0]` for the current θ, τ and μ.
    fn step_params(&self) -> (StepParams, f32) {
        let params = StepParams::new(&self.derived(), self.surrogate, self.spec.reset);
        (
            params,
            mp_init::initial_potential(self.spec.mp_init, self.mu()),
        )
    }

    /// The MP-Init update of μ from a training forward's sums (pooled over ranks if synced).
    fn update_mu(&mut self, sums: &kernel::ForwardSums) {
        if !self.spec.mp_init {
            return;
        }
        let (mut sum_u, mut active) = (sums.sum_u_active, sums.active);
        if let Some(group) = &self.sync {
            let mut pooled = [sum_u, active as f64];
            group.allreduce_sum_f64(&mut pooled);
            (sum_u, active) = (pooled[0], pooled[1] as u64);
        }
        self.mu.value.data_mut()[0] = mp_init::update(self.mu(), sum_u, active);
    }

    /// Adds `∂L/∂k` and `∂L/∂w` from a backward's sums to the trainable parameters.
    fn add_param_grads(&mut self, sums: &kernel::BackwardSums, d: &Derived) {
        if self.k.trainable {
            self.k.grad.data_mut()[0] += (sums.g_theta * d.dtheta_dk) as f32;
        }
        if self.w.trainable {
            self.w.grad.data_mut()[0] += (sums.g_decay * d.one_minus_lambda_f64) as f32;
        }
    }

    /// Backward for a deferred forward ([`Layer::input_deferred`]): `input` must be that
    /// forward's input, bit for bit. [`Layer::restore_input`] followed by [`Layer::backward`].
    pub fn backward_with_input(&mut self, grad_output: Tensor, input: Tensor) -> Result<Tensor> {
        if self.input_deferred() {
            self.restore_input(input)?;
        }
        self.backward(grad_output)
    }
}

impl Layer for Lif {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.is_empty() {
            return Err(Error::shape(&self.name, "[T·B, ...]", input));
        }
        Ok(input.to_vec())
    }

    fn forward(&mut self, mut input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let t = ctx.timesteps;
        let shape = input.shape().to_vec();
        if shape.is_empty() || t == 0 || !shape[0].is_multiple_of(t) {
            return Err(Error::shape(
                &self.name,
                format!("[T·B, ...] with T = {t} dividing the first dimension"),
                &shape,
            ));
        }
        let derived = self.derived();
        let params = StepParams::new(&derived, self.surrogate, self.spec.reset);
        let u0 = mp_init::initial_potential(self.spec.mp_init, self.mu());
        self.cache = None;
        let record = self.recorder.is_some();
        let deferred = ctx.is_train() && self.input_recomputable && !record;
        let sums = if (ctx.is_train() || record) && !deferred {
            kernel::forward_train(&params, u0, t, input.data_mut(), &mut self.tape)
        } else {
            self.free_tape();
            kernel::forward_eval(&params, u0, t, input.data_mut())
        };
        if let Some(h) = &mut self.recorder {
            h.record(self.tape.membrane(), t, params.theta, &self.surrogate);
        }
        self.set_stats(&sums, t, input.len() / t);
        if ctx.is_train() {
            self.update_mu(&sums);
            self.cache = Some(Cached {
                shape,
                timesteps: t,
                params,
                derived,
                u0,
                deferred,
                restored: false,
                fused: None,
            });
        }
        Ok(input.with_spike_scale(Some(params.out_scale)))
    }

    fn backward(&mut self, mut grad_output: Tensor) -> Result<Tensor> {
        let c = self.cached_tape()?;
        if grad_output.shape() != &c.shape[..] {
            return Err(Error::shape(
                &self.name,
                format!("gradient of shape {:?}", c.shape),
                grad_output.shape(),
            ));
        }
        let sums = kernel::backward(&c.params, c.u0, &self.tape, grad_output.data_mut(), None);
        let (restored, derived) = (c.restored, c.derived);
        self.add_param_grads(&sums, &derived);
        if restored {
            // A deferred forward keeps no tape between steps either.
            self.free_tape();
        }
        Ok(grad_output)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.k);
        f(&mut self.w);
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut Buffer)) {
        f(&mut self.mu);
    }

    fn clear_cache(&mut self) {
        self.cache = None;
        self.free_tape();
    }

    /// If `yes`, the next training forward keeps no tape (saving the f32 membrane, 4 bytes per
    /// neuron-step); [`Layer::restore_input`] reruns the forward into the tape. Ignored while
    /// the recorder is on.
    fn set_input_recomputable(&mut self, yes: bool) {
        self.input_recomputable = yes;
    }

    fn input_deferred(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.deferred)
    }

    /// Reruns the forward on `input` into the tape (the same bits, so the same tape); the
    /// following backward frees the tape again.
    fn restore_input(&mut self, mut input: Tensor) -> Result<()> {
        let c = self.cached()?;
        if !c.deferred {
            return Err(Error::State(format!(
                "{}: input was not deferred",
                self.name
            )));
        }
        if input.shape() != &c.shape[..] {
            return Err(Error::shape(
                &self.name,
                format!("recomputed input of shape {:?}", c.shape),
                input.shape(),
            ));
        }
        let (params, u0, t) = (c.params, c.u0, c.timesteps);
        // The tape lives only until this backward: its M comes from, and returns to, the pool.
        self.tape
            .supply_membrane(crate::buffer_pool::overwritable(input.len()));
        kernel::forward_train(&params, u0, t, input.data_mut(), &mut self.tape);
        if let Some(c) = &mut self.cache {
            c.deferred = false;
            c.restored = true;
        }
        Ok(())
    }

    crate::impl_as_any!();
}
