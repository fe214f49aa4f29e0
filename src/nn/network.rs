//! [`Network`]: a runnable model built from a [`ModelSpec`].

use super::build::{build_sequential, check_unique_names, init_rng};
use super::conv::Conv2d;
use super::repeat::Repeat;
use super::spec::{Encoding, LayerSpec, ModelSpec};
use super::{for_each_leaf, Buffer, ForwardCtx, Layer, Param, Sequential};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Every parameter and buffer of a model, by full name.
pub type StateDict = BTreeMap<String, Tensor>;

/// Turns off the input gradient of the first conv when only input-encoding layers precede it:
/// nothing consumes the gradient of the image.
fn skip_first_input_grad(root: &mut Sequential) {
    let mut done = false;
    for_each_leaf(root, &mut |layer| {
        if done {
            return;
        }
        if let Some(conv) = layer.as_any_mut().downcast_mut::<Conv2d>() {
            conv.set_input_grad(false);
            done = true;
        } else if layer.as_any().downcast_ref::<Repeat>().is_none() {
            done = true;
        }
    });
}

/// A model built from a spec: validated shapes, named parameters and buffers.
///
/// ```
/// use mpsnn::nn::{ForwardCtx, ModelSpec, Network};
/// use mpsnn::Tensor;
/// let spec: ModelSpec = serde_json::from_str(r#"{"name": "tiny", "input": [1, 4, 4], "classes": 2,
///   "layers": [{"type": "flatten", "name": "flat"},
///              {"type": "linear", "name": "fc", "in_features": 16, "out_features": 2}]}"#).unwrap();
/// let mut net = Network::new(spec, 7).unwrap();
/// let logits = net.forward(Tensor::zeros(&[3, 1, 4, 4]), &ForwardCtx::eval(2)).unwrap();
/// assert_eq!(logits.shape(), &[6, 2]); // [T·B, classes]
/// ```
pub struct Network {
    spec: ModelSpec,
    root: Sequential,
}

impl Network {
    /// Builds and validates `spec`, initializing parameters deterministically from `seed`.
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Self> {
        check_unique_names(&spec.layers)?;
        if spec.input.len() != 3 || spec.input.contains(&0) {
            return Err(Error::Spec(format!(
                "input must be [C, H, W] with nonzero sizes, got {:?}",
                spec.input
            )));
        }
        let has_repeat = spec
            .layers
            .iter()
            .any(|l| matches!(l, LayerSpec::Repeat(_)));
        if has_repeat && spec.encoding == Encoding::Frames {
            return Err(Error::Spec(
                "a `repeat` layer needs direct encoding; frame inputs already carry T".into(),
            ));
        }
        let mut rng = init_rng(seed);
        let mut root: Sequential = build_sequential(&spec.name, &spec.layers, &mut rng, seed)?;
        if spec.encoding == Encoding::Direct && !has_repeat {
            root.layers_mut_vec()
                .insert(0, Box::new(Repeat::new("encode")));
        }
        skip_first_input_grad(&mut root);
        let mut probe = vec![1];
        probe.extend_from_slice(&spec.input);
        let out = root.output_shape(&probe)?;
        if out != [1, spec.classes] {
            return Err(Error::ShapeMismatch {
                layer: spec.name.clone(),
                expected: format!("model output [N, {}] (classes)", spec.classes),
                got: format!("{out:?}"),
            });
        }
        Ok(Network { spec, root })
    }

    /// The spec this network was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Runs the model. Input: `[B, C, H, W]` for direct encoding, `[T·B, C, H, W]` (time-major)
    /// for frames. Output: logits `[T·B, classes]`, time-major.
    ///
    /// Large activations come from, and return to, this thread's [`crate::buffer_pool`] (kept
    /// between passes; a training pass first frees what its tighter limits do not allow).
    pub fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let _pool = if ctx.is_train() {
            crate::buffer_pool::PoolScope::training()
        } else {
            crate::buffer_pool::PoolScope::eval()
        };
        let s = input.shape();
        if s.len() != 4 || s[1..] != self.spec.input[..] {
            return Err(Error::shape(
                &self.spec.name,
                format!(
                    "[N, {}, {}, {}]",
                    self.spec.input[0], self.spec.input[1], self.spec.input[2]
                ),
                s,
            ));
        }
        if self.spec.encoding == Encoding::Frames && !s[0].is_multiple_of(ctx.timesteps) {
            return Err(Error::shape(
                &self.spec.name,
                format!("[T·B, ...] with T = {}", ctx.timesteps),
                s,
            ));
        }
        self.root.forward(input, ctx)
    }

    /// Back-propagates `∂L/∂logits` (`[T·B, classes]`), accumulating parameter gradients.
    pub fn backward(&mut self, grad_logits: Tensor) -> Result<()> {
        let _pool = crate::buffer_pool::PoolScope::training();
        self.root.backward(grad_logits).map(|_| ())
    }

    /// Calls `f` on every parameter, in forward order.
    pub fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.root.visit_params(f);
    }

    /// Calls `f` on every buffer, in forward order.
    pub fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut Buffer)) {
        self.root.visit_buffers(f);
    }

    /// Calls `f` on every leaf layer, in forward order (e.g. to read LIF statistics).
    pub fn for_each_layer(&mut self, f: &mut dyn FnMut(&mut dyn Layer)) {
        for_each_leaf(&mut self.root, f);
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        self.visit_params(&mut |p| p.grad.fill_zero());
    }

    /// Whether training rebuilds LIF and batch-norm inputs in backward instead of keeping
    /// them ([`Sequential::set_recompute`]; default: [`super::sequential::Recompute::Pointwise`]).
    pub fn set_recompute(&mut self, on: bool) {
        self.root.set_recompute(on);
    }

    /// Sets how much training rebuilds in backward ([`Sequential::set_recompute_level`]).
    pub fn set_recompute_level(&mut self, level: super::sequential::Recompute) {
        self.root.set_recompute_level(level);
    }

    /// Whether eval forwards fuse batch norm → repeat → LIF → max pool runs into one kernel
    /// (default on; bit-identical either way, see [`Sequential::set_eval_fusion`]).
    pub fn set_eval_fusion(&mut self, on: bool) {
        self.root.set_eval_fusion(on);
    }

    /// Whether training fuses repeat → LIF → max pool runs into one forward and one backward
    /// kernel (default on; bit-identical either way but for a one-channel stem's weight
    /// gradient, see [`Sequential::set_train_fusion`] and
    /// [`Network::set_stem_grad_by_linearity`]).
    pub fn set_train_fusion(&mut self, on: bool) {
        self.root.set_train_fusion(on);
    }

    /// Whether fused training takes a one-channel stem's weight gradient by linearity (default
    /// on; equal to the layer-by-layer gradient within f32 rounding, see
    /// [`Sequential::set_stem_grad_by_linearity`]). Off, fused training is bit-identical to
    /// layer by layer.
    pub fn set_stem_grad_by_linearity(&mut self, on: bool) {
        self.root.set_stem_grad_by_linearity(on);
    }

    /// Drops cached forward state in every layer.
    pub fn clear_cache(&mut self) {
        self.root.clear_cache();
    }

    /// Number of learnable scalars (trainable or frozen).
    pub fn param_count(&mut self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.value.len());
        n
    }

    /// A copy of every parameter and buffer, by name.
    pub fn state_dict(&mut self) -> StateDict {
        let mut sd = StateDict::new();
        self.visit_params(&mut |p| {
            sd.insert(p.name.clone(), p.value.clone());
        });
        self.visit_buffers(&mut |b| {
            sd.insert(b.name.clone(), b.value.clone());
        });
        sd
    }

    /// Loads parameters and buffers by name. Every name must be present with the right shape,
    /// and no unknown names may remain; otherwise nothing is changed and the error names the
    /// first problem.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        self.visit_params(&mut |p| {
            expected.insert(p.name.clone(), p.value.shape().to_vec());
        });
        self.visit_buffers(&mut |b| {
            expected.insert(b.name.clone(), b.value.shape().to_vec());
        });
        for (name, shape) in &expected {
            match sd.get(name) {
                None => return Err(Error::State(format!("missing tensor {name:?}"))),
                Some(t) if t.shape() != &shape[..] => {
                    return Err(Error::State(format!(
                        "tensor {name:?} has shape {:?}, the model needs {shape:?}",
                        t.shape()
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = sd.keys().find(|k| !expected.contains_key(*k)) {
            return Err(Error::State(format!("unknown tensor {extra:?}")));
        }
        self.visit_params(&mut |p| p.value = sd[&p.name].clone());
        self.visit_buffers(&mut |b| b.value = sd[&b.name].clone());
        Ok(())
    }
}
