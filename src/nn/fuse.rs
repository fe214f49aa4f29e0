//! Fusion inside a [`super::Sequential`]: in eval, a run `[BatchNorm2d] [Repeat] Lif
//! [MaxPool2d]` (at least two of them) runs as one plane-wise kernel
//! ([`Lif::forward_eval_planes`]), and so does the tail of a residual block ending in a batch
//! norm together with the neuron after the block (`bn(body) + shortcut → Lif`, an identity
//! shortcut over spikes added from its bits); in training, a run `[Repeat] Lif [MaxPool2d]`
//! runs as one forward and one backward kernel ([`Lif::forward_train_planes`]; the batch norm
//! stays a layer, it needs batch statistics first), and a batch norm before a deferred neuron
//! with no such run only computes its statistics, the neuron applying it as it loads its input
//! ([`Lif::forward_affine`]). Either way with the same bits as layer by layer. A fused eval neuron also packs its output spikes to bits when the next layer reads
//! them ([`Layer::reads_spike_bits`]), while each plane is still in cache.
//!
//! Why: the stages between two convolutions are memory passes over the largest activations;
//! `mnist-cnn`'s stem alone streams 25.7 MB through each of repeat, LIF and pool per batch of
//! 64, and training adds the backward passes. A ResNet-19 block's tail was four passes over
//! 134 MB (batch norm, shortcut add, LIF, the next conv's packing): fused, ResNet-19 inference
//! runs 11–18 % faster (docs/perf.md).

use super::batchnorm::BatchNorm2d;
use super::conv::Conv2d;
use super::lif::{EvalStages, Lif};
use super::pool::MaxPool2d;
use super::repeat::Repeat;
use super::residual::{Residual, Shortcut};
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::kernels::lif::Addend;
use crate::kernels::pool::PoolGeom;
use crate::tensor::Tensor;

/// A fusable run of layers starting at some index of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    batch_norm: Option<usize>,
    repeat: Option<usize>,
    lif: usize,
    pool: Option<usize>,
    /// One past the run's last layer.
    pub end: usize,
}

fn is<T: 'static>(layers: &[Box<dyn Layer>], i: usize) -> bool {
    layers.get(i).is_some_and(|l| l.as_any().is::<T>())
}

impl Run {
    /// The batch norm the run starts with, if any.
    pub fn batch_norm(&self) -> Option<usize> {
        self.batch_norm
    }

    /// True for a [`find_bn_lif_run`] run (a batch norm and a deferred neuron only).
    fn is_bn_lif(&self) -> bool {
        self.batch_norm.is_some() && self.repeat.is_none() && self.pool.is_none()
    }

    /// The run's first layer.
    pub fn start(&self) -> usize {
        self.batch_norm.or(self.repeat).unwrap_or(self.lif)
    }
}

/// The eval run starting at layer `i` for an input of shape `input`, if there is one worth
/// fusing.
pub(super) fn find_run(layers: &[Box<dyn Layer>], i: usize, input: &[usize]) -> Option<Run> {
    find(layers, i, input, true, Lif::can_fuse_eval)
}

/// The training run (no batch norm) starting at layer `i`, if there is one worth fusing.
///
/// A batch norm before such a run joins it: it computes its statistics only, and the neuron
/// applies it to the planes in cache ([`Lif::forward_train_planes_affine`]).
pub(super) fn find_train_run(layers: &[Box<dyn Layer>], i: usize, input: &[usize]) -> Option<Run> {
    if is::<BatchNorm2d>(layers, i) {
        let inner = find(layers, i + 1, input, false, Lif::can_fuse_train)?;
        return Some(Run {
            batch_norm: Some(i),
            ..inner
        });
    }
    find(layers, i, input, false, Lif::can_fuse_train)
}

fn find(
    layers: &[Box<dyn Layer>],
    i: usize,
    input: &[usize],
    with_batch_norm: bool,
    can_fuse: fn(&Lif) -> bool,
) -> Option<Run> {
    if input.len() != 4 {
        return None;
    }
    let batch_norm = (with_batch_norm && is::<BatchNorm2d>(layers, i)).then_some(i);
    let j = i + batch_norm.is_some() as usize;
    let repeat = is::<Repeat>(layers, j).then_some(j);
    let j = j + repeat.is_some() as usize;
    let lif = j;
    let fusable = layers
        .get(lif)
        .and_then(|l| l.as_any().downcast_ref::<Lif>())
        .is_some_and(can_fuse);
    if !fusable {
        return None;
    }
    let pool = is::<MaxPool2d>(layers, lif + 1).then_some(lif + 1);
    let end = lif + 1 + pool.is_some() as usize;
    (end - i >= 2).then_some(Run {
        batch_norm,
        repeat,
        lif,
        pool,
        end,
    })
}

/// True if layer `i` exists and reads its spike input as bits: the fused neuron before it
/// packs its output then.
fn reads_bits(layers: &[Box<dyn Layer>], i: usize) -> bool {
    layers.get(i).is_some_and(|l| l.reads_spike_bits())
}

fn downcast<T: 'static>(layer: &mut dyn Layer) -> &mut T {
    layer
        .as_any_mut()
        .downcast_mut::<T>()
        .expect("find_run checked the layer type")
}

/// The batch norm at `b` and the neuron at `lif` (`b < lif`), both borrowed.
fn batch_norm_and_lif(
    layers: &mut [Box<dyn Layer>],
    b: usize,
    lif: usize,
) -> (&mut BatchNorm2d, &mut Lif) {
    let (head, tail) = layers.split_at_mut(lif);
    (
        downcast::<BatchNorm2d>(head[b].as_mut()),
        downcast::<Lif>(tail[0].as_mut()),
    )
}

/// Clears the caches of `run`'s repeat and pool (the fused kernel replaces them) and returns
/// the pool's plane geometry for `input` (the LIF's input shape).
fn prepare(layers: &mut [Box<dyn Layer>], run: Run, input: &[usize]) -> Result<Option<PoolGeom>> {
    if let Some(i) = run.repeat {
        layers[i].clear_cache();
    }
    match run.pool {
        Some(i) => {
            layers[i].clear_cache();
            Ok(Some(
                downcast::<MaxPool2d>(layers[i].as_mut()).plane_geometry(input)?,
            ))
        }
        None => Ok(None),
    }
}

/// The statistics half of the batch norm at `b`'s training forward on `input`
/// ([`BatchNorm2d::forward_stats_only`]), from the moments of `input`'s planes if the conv
/// before it took them as it wrote `input` ([`Conv2d::take_output_moments`]).
fn batch_norm_stats(layers: &mut [Box<dyn Layer>], b: usize, input: &Tensor) -> Result<()> {
    let (before, rest) = layers.split_at_mut(b);
    let moments = before
        .last_mut()
        .and_then(|l| l.as_any_mut().downcast_mut::<Conv2d>())
        .and_then(|conv| conv.take_output_moments(input));
    downcast::<BatchNorm2d>(rest[0].as_mut()).forward_stats_only(input, moments)
}

/// Tells the conv at `i` (given `input`) whether it feeds a training run that starts with a
/// batch norm (found by `run_at`): if so, its forward takes the moments that batch norm's
/// statistics need ([`Conv2d::set_output_moments`]). Does nothing for other layers.
pub(super) fn ask_conv_for_moments(
    layers: &mut [Box<dyn Layer>],
    i: usize,
    input: &[usize],
    run_at: impl Fn(&[Box<dyn Layer>], usize, &[usize]) -> Option<Run>,
) -> Result<()> {
    if !is::<Conv2d>(layers, i) {
        return Ok(());
    }
    let out = layers[i].output_shape(input)?;
    let feeds_bn = run_at(layers, i + 1, &out).is_some_and(|r| r.batch_norm == Some(i + 1));
    downcast::<Conv2d>(layers[i].as_mut()).set_output_moments(feeds_bn);
    Ok(())
}

/// Runs training run `run` (from [`find_train_run`] or [`find_bn_lif_run`]) on `input`;
/// [`backward_train`] must follow.
pub(super) fn forward_train(
    layers: &mut [Box<dyn Layer>],
    run: Run,
    input: Tensor,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    if run.is_bn_lif() {
        return forward_bn_lif(layers, run, input, ctx);
    }
    let repeated = run.repeat.is_some();
    let Some(b) = run.batch_norm else {
        let pool = prepare(layers, run, input.shape())?;
        let lif = downcast::<Lif>(layers[run.lif].as_mut());
        return lif.forward_train_planes(input, ctx, repeated, pool);
    };
    batch_norm_stats(layers, b, &input)?;
    // The neuron's input: the batch norm's shape, repeated over T by the run if it has a repeat.
    let pool = prepare(layers, run, input.shape())?;
    let (bn, lif) = batch_norm_and_lif(layers, b, run.lif);
    let out = lif.forward_train_planes_affine(&input, bn.train_affine(), ctx, repeated, pool)?;
    bn.keep_input(input);
    Ok(out)
}

/// Backward of the last [`forward_train`] or [`forward_bn_lif`] of `run`: `grad` is
/// `∂L/∂(run output)`. A batch norm's deferred input must have been restored first.
pub(super) fn backward_train(
    layers: &mut [Box<dyn Layer>],
    run: Run,
    grad: Tensor,
) -> Result<Tensor> {
    let Some(b) = run.batch_norm else {
        return downcast::<Lif>(layers[run.lif].as_mut()).backward_train_planes(grad);
    };
    let (bn, lif) = batch_norm_and_lif(layers, b, run.lif);
    let missing = |bn: &BatchNorm2d| Error::NoForwardCache {
        layer: bn.name().to_string(),
    };
    if run.is_bn_lif() {
        let x = bn.kept_input().ok_or_else(|| missing(bn))?;
        lif.restore_affine(x, &bn.train_affine())?;
        let grad = lif.backward(grad)?;
        return bn.backward(grad);
    }
    // The neuron takes the batch norm's sums while each gradient plane is in cache.
    let mut sums = bn.take_plane_sums();
    let x = bn.kept_input().ok_or_else(|| missing(bn))?;
    let grad = lif.backward_train_planes_affine(grad, x, bn.train_affine(), Some(&mut sums))?;
    bn.backward_from_plane_sums(grad, sums)
}

/// The conv before `run`'s batch norm, if it takes the batch norm's backward as it reads the
/// gradient ([`Conv2d::takes_bn_grad`], [`BatchNorm2d::gives_grad_affines`]): backward then
/// runs both with the run ([`backward_train_through_conv`]). A stem conv (no input gradient),
/// and a conv on spikes whose gradients run on the Winograd kernels (`mnist-cnn`'s conv2), are
/// the cases: the batch norm's pass writing `∂L/∂y` (a 12.8 MB stream at conv2, read and
/// written in one pass with two others) is saved, at about 1 % of a `mnist-cnn` training step
/// on a Zen 4 (profile shares of the passes involved, 11.7 → 10.3 %).
pub(super) fn conv_taking_run_grad(layers: &[Box<dyn Layer>], run: Run) -> Option<usize> {
    let b = run.batch_norm.filter(|_| !run.is_bn_lif())?;
    let conv = b.checked_sub(1)?;
    let takes = layers[conv]
        .as_any()
        .downcast_ref::<Conv2d>()
        .is_some_and(Conv2d::takes_bn_grad);
    let gives = layers[b]
        .as_any()
        .downcast_ref::<BatchNorm2d>()
        .is_some_and(BatchNorm2d::gives_grad_affines);
    (takes && gives).then_some(conv)
}

/// [`backward_train`] of `run` together with the conv at `conv` just before it (a
/// [`conv_taking_run_grad`]): the batch norm stops at its per-channel gradient affines, and
/// the conv forms `∂L/∂y` from them as it loads the neuron's gradient
/// ([`Conv2d::backward_through_bn`]), so `∂L/∂y` is never written. The same bits as
/// [`backward_train`] then the conv's backward. Returns the conv's input gradient.
///
/// With `stem_by_linearity`, a one-channel stem ([`Conv2d::stem_taps_images`]) instead takes
/// its weight gradient from per-plane sums the neuron's backward takes
/// ([`Lif::backward_train_planes_to_stem`]), so the neuron's gradient is not written either:
/// equal to the route above within f32 rounding, not bit for bit
/// ([`crate::kernels::conv::stem_linear`]).
pub(super) fn backward_train_through_conv(
    layers: &mut [Box<dyn Layer>],
    conv: usize,
    run: Run,
    grad: Tensor,
    stem_by_linearity: bool,
) -> Result<Tensor> {
    let b = run.batch_norm.expect("a run with a batch norm");
    let (head, tail) = layers.split_at_mut(b);
    let conv = downcast::<Conv2d>(head[conv].as_mut());
    let (bn, lif) = batch_norm_and_lif(tail, 0, run.lif - b);
    let mut sums = bn.take_plane_sums();
    let x = bn.kept_input().ok_or_else(|| Error::NoForwardCache {
        layer: bn.name().to_string(),
    })?;
    if stem_by_linearity && conv.stem_taps_images().is_some() {
        let mut taps = conv.take_stem_taps();
        let images = conv.stem_taps_images().expect("checked above");
        let affine = bn.train_affine();
        lif.backward_train_planes_to_stem(grad, x, affine, &mut sums, images, &mut taps)?;
        let (affines, _) = bn.backward_to_grad_affines(sums)?;
        return conv.backward_from_stem_taps(taps, &affines);
    }
    let grad = lif.backward_train_planes_affine(grad, x, bn.train_affine(), Some(&mut sums))?;
    let (affines, x) = bn.backward_to_grad_affines(sums)?;
    conv.backward_through_bn(&grad, &x, &affines)
}

/// The training run `BatchNorm2d → Lif` at layer `i` for an input of shape `input`, if the
/// neuron can apply the batch norm itself ([`Lif::can_take_affine`]) and does not start a
/// [`find_train_run`] run of its own. The caller decides whether the neuron's input may be
/// deferred at all (the run always defers it).
pub(super) fn find_bn_lif_run(layers: &[Box<dyn Layer>], i: usize, input: &[usize]) -> Option<Run> {
    let lif = layers.get(i + 1)?.as_any().downcast_ref::<Lif>()?;
    let fits = is::<BatchNorm2d>(layers, i)
        && input.len() == 4
        && lif.can_take_affine(input)
        && find_train_run(layers, i + 1, input).is_none();
    fits.then_some(Run {
        batch_norm: Some(i),
        repeat: None,
        lif: i + 1,
        pool: None,
        end: i + 2,
    })
}

/// Runs a [`find_bn_lif_run`] run on `input`: the batch norm computes its statistics only and
/// keeps `input`; the neuron reads `input` through the batch norm's affine
/// ([`Lif::forward_affine`]), so the normalized activation is never written, in the forward or
/// in the backward's rebuild of the tape. Same bits as layer by layer.
fn forward_bn_lif(
    layers: &mut [Box<dyn Layer>],
    run: Run,
    input: Tensor,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let b = run.batch_norm.expect("a batch-norm run");
    batch_norm_stats(layers, b, &input)?;
    let (bn, lif) = batch_norm_and_lif(layers, b, run.lif);
    let out = lif.forward_affine(&input, &bn.train_affine(), ctx)?;
    bn.keep_input(input);
    Ok(out)
}

/// Runs `run` in eval mode on `input` (the input of its first layer).
pub(super) fn forward(
    layers: &mut [Box<dyn Layer>],
    run: Run,
    input: Tensor,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let affine = match run.batch_norm {
        Some(i) => Some(downcast::<BatchNorm2d>(layers[i].as_mut()).eval_affine(input.shape())?),
        None => None,
    };
    let around = EvalStages {
        affine: affine.as_ref(),
        repeated: run.repeat.is_some(),
        addend: None,
        pool: prepare(layers, run, input.shape())?,
        pack_output: reads_bits(layers, run.end),
    };
    let lif = downcast::<Lif>(layers[run.lif].as_mut());
    lif.forward_eval_planes(input, ctx, &around)
}

/// True if layers `i` and `i + 1` are a residual block and the neuron after it that
/// [`forward_residual_tail`] runs as one pass over an input of shape `input`: the block's final
/// batch norm, the shortcut addition and the LIF step. Without it those are three passes over
/// ResNet-19's largest activations, after a fourth that packs the block's input.
pub(super) fn is_residual_tail(layers: &[Box<dyn Layer>], i: usize, input: &[usize]) -> bool {
    input.len() == 4
        && layers
            .get(i)
            .and_then(|l| l.as_any().downcast_ref::<Residual>())
            .is_some_and(Residual::can_open_eval)
        && layers
            .get(i + 1)
            .and_then(|l| l.as_any().downcast_ref::<Lif>())
            .is_some_and(Lif::can_fuse_eval)
}

/// Runs the block at `i` and its neuron at `i + 1` in eval mode (see [`is_residual_tail`]),
/// with the same bits as layer by layer.
pub(super) fn forward_residual_tail(
    layers: &mut [Box<dyn Layer>],
    i: usize,
    input: Tensor,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let block = downcast::<Residual>(layers[i].as_mut());
    let (pre, affine, side) = block.forward_eval_open(input, ctx)?;
    let addend = match &side {
        Shortcut::Spikes(b) => Addend::spikes(b),
        Shortcut::Dense(t) => Addend::Dense(t.data()),
    };
    let around = EvalStages {
        affine: Some(&affine),
        addend: Some(addend),
        pack_output: reads_bits(layers, i + 2),
        ..EvalStages::default()
    };
    downcast::<Lif>(layers[i + 1].as_mut()).forward_eval_planes(pre, ctx, &around)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{build, ModelOptions};
    use crate::nn::build::{build_sequential, init_rng};

    /// The runs `mnist-cnn` fuses: stem BN → repeat → LIF → pool1, and BN → LIF → pool2.
    #[test]
    fn mnist_cnn_fuses_both_stages() {
        let spec = build("mnist-cnn", &ModelOptions::new([1, 28, 28], 10)).unwrap();
        let seq = build_sequential("m", &spec.layers, &mut init_rng(1), 1).unwrap();
        let layers = seq.layers();
        let names: Vec<&str> = layers.iter().map(|l| l.name()).collect();
        let at = |name: &str| names.iter().position(|&n| n == name).unwrap();
        let stem = find_run(layers, at("stem_bn"), &[4, 32, 28, 28]).unwrap();
        assert_eq!(
            stem,
            Run {
                batch_norm: Some(at("stem_bn")),
                repeat: Some(at("repeat")),
                lif: at("stem_lif"),
                pool: Some(at("pool1")),
                end: at("pool1") + 1,
            }
        );
        let second = find_run(layers, at("conv2_bn"), &[16, 64, 14, 14]).unwrap();
        assert_eq!((second.repeat, second.end), (None, at("pool2") + 1));
        // Training takes the same runs (the batch norm computes statistics only), and
        // without the batch norm if the run starts after it.
        let train = find_train_run(layers, at("stem_bn"), &[4, 32, 28, 28]).unwrap();
        assert_eq!(train, stem);
        let train = find_train_run(layers, at("repeat"), &[4, 32, 28, 28]).unwrap();
        assert_eq!((train.start(), train.end), (at("repeat"), at("pool1") + 1));
        let second = find_train_run(layers, at("conv2_bn"), &[16, 64, 14, 14]).unwrap();
        assert_eq!(
            (second.start(), second.end),
            (at("conv2_bn"), at("pool2") + 1)
        );
        // These are plane runs, not batch norm → deferred neuron runs, which are only for a
        // neuron without a run of its own.
        assert!(!train.is_bn_lif() && !second.is_bn_lif());
        assert_eq!(
            find_bn_lif_run(layers, at("conv2_bn"), &[16, 64, 14, 14]),
            None
        );
        // Not at a conv, and not on a flat input.
        assert_eq!(find_run(layers, at("conv2_conv"), &[16, 32, 14, 14]), None);
        assert_eq!(find_run(layers, at("conv2_bn"), &[16, 64]), None);
        // The stem's output is packed for conv2, which reads bits; pool2's is not: flatten
        // and the linear layer do not.
        assert!(layers[stem.end].reads_spike_bits());
        assert!(!layers[second.end].reads_spike_bits());
    }

    /// Every ResNet-19 block (identity or projection shortcut) fuses its tail with the neuron
    /// after it, not while that neuron's recorder is on, and not on a flat input.
    #[test]
    fn resnet19_fuses_every_block_tail() {
        let spec = build("resnet19", &ModelOptions::new([3, 16, 16], 10)).unwrap();
        let mut seq = build_sequential("m", &spec.layers, &mut init_rng(1), 1).unwrap();
        let layers = seq.layers();
        let blocks: Vec<usize> = (0..layers.len())
            .filter(|&i| layers[i].as_any().is::<Residual>())
            .collect();
        assert_eq!(blocks.len(), 8);
        let shape = [8, 128, 16, 16];
        for i in 0..layers.len() {
            assert_eq!(is_residual_tail(layers, i, &shape), blocks.contains(&i));
        }
        assert!(!is_residual_tail(layers, blocks[0], &[8, 128]));
        assert!(layers[blocks[0]].reads_spike_bits());
        let lif = seq.layers_mut()[blocks[0] + 1]
            .as_any_mut()
            .downcast_mut::<Lif>()
            .unwrap();
        lif.set_recorder(Some(Default::default()));
        assert!(!is_residual_tail(seq.layers(), blocks[0], &shape));
    }
}
