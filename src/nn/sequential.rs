//! [`Sequential`]: layers run one after another.

use super::conv::Conv2d;
use super::fuse;
use super::lif::Lif;
use super::{Buffer, ForwardCtx, Layer, Param};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// How much forward state training rebuilds in backward instead of keeping
/// ([`Sequential::set_recompute_level`]). Results are bit-identical at every level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recompute {
    /// Every layer keeps what its backward needs.
    Off,
    /// LIF layers after a layer that can rebuild its output keep no membrane tape.
    Lif,
    /// As `Lif`, and batch norms after a 1×1 spike-input conv (a ResNet shortcut) keep no f32
    /// input: backward reruns the conv on its bit-packed spikes, at 1/9 of a 3×3 conv's cost
    /// (the default).
    Pointwise,
    /// As `Lif`, and every batch norm after a spike-input conv keeps no f32 input. Halves a
    /// ResNet-19 step's peak memory, but the reruns of the 3×3 convs cost ≈ 20 % of the step
    /// time (docs/perf.md).
    Full,
}

/// Runs its layers in order; backward runs them in reverse.
///
/// Memory: in training, a layer whose predecessor can rebuild its output
/// ([`Layer::can_recompute_output`]) may keep less for backward
/// ([`Layer::set_input_recomputable`]), and backward restores its input first
/// ([`Layer::restore_input`]), walking back through deferred layers to one that rebuilds its
/// output from its own cache. So a LIF after batch norm (or after a residual block ending in
/// one) keeps no membrane tape, and a batch norm after a conv on spikes keeps no input: the
/// conv reruns on its 1-bit cache. The rebuilt values are the same bits, so are the gradients;
/// the cost is one LIF forward per neuron layer and one (event-driven) conv forward per such
/// batch norm, for one f32 activation fewer per layer.
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    recompute: Recompute,
    fuse_eval: bool,
    fuse_train: bool,
    /// See [`Sequential::set_stem_grad_by_linearity`].
    stem_by_linearity: bool,
    /// The runs the last training forward fused: backward runs each as one unit.
    fused_runs: Vec<fuse::Run>,
}

impl Sequential {
    /// A container named `name` holding `layers`.
    pub fn new(name: impl Into<String>, layers: Vec<Box<dyn Layer>>) -> Self {
        Sequential {
            name: name.into(),
            layers,
            recompute: Recompute::Pointwise,
            fuse_eval: true,
            fuse_train: true,
            stem_by_linearity: true,
            fused_runs: Vec::new(),
        }
    }

    /// Turns recomputation (see the type docs) fully on ([`Recompute::Full`]) or off here and
    /// in every nested container (the default is [`Recompute::Pointwise`]). Off keeps every
    /// layer's input or tape instead: more memory, less compute; results are bit-identical
    /// either way.
    pub fn set_recompute(&mut self, on: bool) {
        self.set_recompute_level(if on { Recompute::Full } else { Recompute::Off });
    }

    /// Sets the recomputation level here and in every nested container.
    pub fn set_recompute_level(&mut self, on: Recompute) {
        self.for_each_container(&mut |seq| seq.recompute = on);
    }

    /// Whether eval forwards run `[BatchNorm2d] [Repeat] Lif [MaxPool2d]` runs, and residual
    /// block tails with the neuron after them, as one fused kernel (the default; bit-identical,
    /// see [`super::lif::Lif::forward_eval_planes`] and [`super::lif::EvalStages`]), here and in every
    /// nested container. Off runs every layer on its own.
    pub fn set_eval_fusion(&mut self, on: bool) {
        self.for_each_container(&mut |seq| seq.fuse_eval = on);
    }

    /// Whether training forwards run `[Repeat] Lif [MaxPool2d]` runs as one fused kernel and
    /// their backward as another (the default; bit-identical, see
    /// [`super::lif::Lif::forward_train_planes`], but for a one-channel stem's weight gradient,
    /// see [`Sequential::set_stem_grad_by_linearity`]), here and in every nested container. Off
    /// runs every layer on its own. Takes effect at the next forward.
    pub fn set_train_fusion(&mut self, on: bool) {
        self.for_each_container(&mut |seq| seq.fuse_train = on);
    }

    /// Whether a fused training run after a one-channel 3×3 stem conv (`mnist-cnn`'s) takes
    /// the stem's weight gradient by linearity from sums its neuron's backward takes plane by
    /// plane ([`crate::kernels::conv::stem_linear`]; the default), here and in every nested
    /// container. That gradient then equals the layer-by-layer one within f32 rounding (it is
    /// summed in another order), not bit for bit; off, fused training is bit-identical to
    /// layer by layer.
    pub fn set_stem_grad_by_linearity(&mut self, on: bool) {
        self.for_each_container(&mut |seq| seq.stem_by_linearity = on);
    }

    /// Calls `f` on this container and on every `Sequential` nested in it at any depth
    /// (inside residual blocks too).
    fn for_each_container(&mut self, f: &mut dyn FnMut(&mut Sequential)) {
        f(self);
        fn walk(layer: &mut dyn Layer, f: &mut dyn FnMut(&mut Sequential)) {
            match layer.as_any_mut().downcast_mut::<Sequential>() {
                Some(seq) => seq.for_each_container(f),
                None => {
                    for child in layer.children_mut() {
                        walk(child, f);
                    }
                }
            }
        }
        for layer in &mut self.layers {
            walk(layer.as_mut(), f);
        }
    }

    /// The layers, in forward order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layers, mutable.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// The layer vector itself (to insert or remove layers).
    pub fn layers_mut_vec(&mut self) -> &mut Vec<Box<dyn Layer>> {
        &mut self.layers
    }

    /// True if it holds no layers (an identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Gives layer `i` its deferred input back: the output of layer `i − 1`, rebuilt.
    fn restore_input(&mut self, i: usize) -> Result<()> {
        let input = match i.checked_sub(1) {
            Some(p) => self.rebuild_output(p)?,
            None => {
                return Err(Error::State(format!(
                    "{}: the first layer {} deferred its input",
                    self.name,
                    self.layers[i].name()
                )))
            }
        };
        self.layers[i].restore_input(input)
    }

    /// The output of layer `p`'s last training forward, rebuilt; a deferred layer gets its own
    /// input restored first (it keeps it for its backward, which comes next).
    fn rebuild_output(&mut self, p: usize) -> Result<Tensor> {
        if self.layers[p].input_deferred() {
            self.restore_input(p)?;
        }
        self.layers[p].recompute_output().ok_or_else(|| {
            Error::State(format!(
                "{}: {} cannot recompute its output",
                self.name,
                self.layers[p].name()
            ))
        })
    }

    /// Runs layers `0..end` on `input` (fusing as [`Layer::forward`] does, within that range)
    /// and returns the output of layer `end − 1`.
    pub(super) fn forward_until(
        &mut self,
        input: Tensor,
        ctx: &ForwardCtx,
        end: usize,
    ) -> Result<Tensor> {
        self.forward_range(input, ctx, 0, end)
    }

    /// True if a fused run starts at layer `i` for an input of shape `input` in `ctx`'s mode.
    fn fuses_at(&self, i: usize, input: &[usize], ctx: &ForwardCtx) -> bool {
        if ctx.is_train() {
            self.fuse_train && train_run_at(self.recompute, &self.layers, i, input).is_some()
        } else {
            self.fuse_eval
                && (fuse::is_residual_tail(&self.layers, i, input)
                    || fuse::find_run(&self.layers, i, input).is_some())
        }
    }

    /// Layers `start..end` on `input`, the output of layer `start − 1`.
    fn forward_range(
        &mut self,
        input: Tensor,
        ctx: &ForwardCtx,
        start: usize,
        end: usize,
    ) -> Result<Tensor> {
        let mut x = input;
        let mut i = start;
        let layers = &mut self.layers[..end];
        while i < layers.len() {
            if ctx.is_train() && self.fuse_train {
                if let Some(run) = train_run_at(self.recompute, layers, i, x.shape()) {
                    if let Some(b) = run.batch_norm() {
                        let deferred = recomputable(self.recompute, layers, b);
                        layers[b].set_input_recomputable(deferred);
                    }
                    x = fuse::forward_train(layers, run, x, ctx)?;
                    self.fused_runs.push(run);
                    i = run.end;
                    continue;
                }
            }
            if !ctx.is_train() && self.fuse_eval {
                if fuse::is_residual_tail(layers, i, x.shape()) {
                    x = fuse::forward_residual_tail(layers, i, x, ctx)?;
                    i += 2;
                    continue;
                }
                if let Some(run) = fuse::find_run(layers, i, x.shape()) {
                    x = fuse::forward(layers, run, x, ctx)?;
                    i = run.end;
                    continue;
                }
            }
            if ctx.is_train() {
                layers[i].set_input_recomputable(recomputable(self.recompute, layers, i));
                if self.fuse_train {
                    let run_at = |l: &[Box<dyn Layer>], j, shape: &[usize]| {
                        train_run_at(self.recompute, l, j, shape)
                    };
                    fuse::ask_conv_for_moments(layers, i, x.shape(), run_at)?;
                }
            }
            x = layers[i].forward(x, ctx)?;
            i += 1;
        }
        Ok(x)
    }
}

impl Layer for Sequential {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for layer in &self.layers {
            shape = layer.output_shape(&shape)?;
        }
        Ok(shape)
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.fused_runs.clear();
        self.forward_until(input, ctx, self.layers.len())
    }

    /// The first layer runs on the borrowed input ([`Layer::forward_ref`]), unless a fused run
    /// starts there (it takes its input by value: a copy); an empty container returns a copy.
    fn forward_ref(&mut self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        if self.layers.is_empty() || self.fuses_at(0, input.shape(), ctx) {
            return self.forward(input.parallel_clone(), ctx);
        }
        self.fused_runs.clear();
        if ctx.is_train() {
            self.layers[0].set_input_recomputable(false);
        }
        let x = self.layers[0].forward_ref(input, ctx)?;
        self.forward_range(x, ctx, 1, self.layers.len())
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let mut g = grad_output;
        let mut end = self.layers.len();
        while end > 0 {
            if let Some(run) = self.fused_runs.iter().find(|r| r.end == end).copied() {
                if let Some(b) = run
                    .batch_norm()
                    .filter(|&b| self.layers[b].input_deferred())
                {
                    self.restore_input(b)?;
                }
                if let Some(conv) = fuse::conv_taking_run_grad(&self.layers, run) {
                    let linear = self.stem_by_linearity;
                    g = fuse::backward_train_through_conv(&mut self.layers, conv, run, g, linear)?;
                    end = conv;
                    continue;
                }
                g = fuse::backward_train(&mut self.layers, run, g)?;
                end = run.start();
                continue;
            }
            let i = end - 1;
            if self.layers[i].input_deferred() {
                self.restore_input(i)?;
            }
            g = self.layers[i].backward(g)?;
            end = i;
        }
        Ok(g)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for layer in &mut self.layers {
            layer.visit_params(f);
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut Buffer)) {
        for layer in &mut self.layers {
            layer.visit_buffers(f);
        }
    }

    fn children_mut(&mut self) -> Vec<&mut dyn Layer> {
        self.layers
            .iter_mut()
            .map(|l| l.as_mut() as &mut dyn Layer)
            .collect()
    }

    fn is_leaf(&self) -> bool {
        false
    }

    fn clear_cache(&mut self) {
        self.fused_runs.clear();
        for layer in &mut self.layers {
            layer.clear_cache();
        }
    }

    fn reads_spike_bits(&self) -> bool {
        self.layers.first().is_some_and(|l| l.reads_spike_bits())
    }

    fn can_recompute_output(&self) -> bool {
        self.layers.last().is_some_and(|l| l.can_recompute_output())
    }

    fn recompute_output(&mut self) -> Option<Tensor> {
        let last = self.layers.len().checked_sub(1)?;
        self.rebuild_output(last).ok()
    }

    crate::impl_as_any!();
}

/// The training run starting at layer `i` for an input of shape `input`, if any: a plane run,
/// else a batch norm → deferred neuron run where `level` defers neurons at all.
fn train_run_at(
    level: Recompute,
    layers: &[Box<dyn Layer>],
    i: usize,
    input: &[usize],
) -> Option<fuse::Run> {
    fuse::find_train_run(layers, i, input).or_else(|| {
        (level != Recompute::Off)
            .then(|| fuse::find_bn_lif_run(layers, i, input))
            .flatten()
    })
}

/// Whether layer `i` of `layers` may defer its training input at recompute level `level`:
/// its predecessor must be able to rebuild its output.
fn recomputable(level: Recompute, layers: &[Box<dyn Layer>], i: usize) -> bool {
    let is_lif = layers[i].as_any().is::<Lif>();
    i > 0
        && layers[i - 1].can_recompute_output()
        && match level {
            Recompute::Off => false,
            Recompute::Lif => is_lif,
            Recompute::Pointwise => {
                is_lif
                    || layers[i - 1]
                        .as_any()
                        .downcast_ref::<Conv2d>()
                        .is_some_and(|c| c.spec().kernel == 1)
            }
            Recompute::Full => true,
        }
}
