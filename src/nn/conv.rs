//! [`Conv2d`]: 2-D convolution on `[T·B, C, H, W]` (groups = 1, square kernel).

use super::build::{uniform, InitRng};
use super::spec::Conv2dSpec;
use super::{ForwardCtx, Layer, Param};
use crate::error::{Error, Result};
use crate::kernels::conv::sparse::{self, SpikeBits};
use crate::kernels::conv::{self, ConvGeom, ConvWorkspace};
use crate::tensor::Tensor;
use std::sync::Arc;

/// 2-D convolution, PyTorch semantics (`nn.Conv2d` with `groups = 1`, zero padding).
///
/// Parameters: `<name>.weight` `[out, in, k, k]` and, if the spec asks for it, `<name>.bias`
/// `[out]`, both initialised `U(±1/√(in·k·k))` as PyTorch does. Training mode caches the input
/// (not the im2col matrix, which backward recomputes to keep memory low); backward reuses the
/// cached input's memory for the input gradient.
///
/// Spike inputs (tensors with a [`Tensor::spike_scale`] hint, i.e. after a LIF layer) are
/// packed to one bit per element ([`SpikeBits`]; the bits the LIF layer attached if it did,
/// [`Tensor::spike_bits`]) and cached that way (1/32 of the f32 size).
/// The forward pass and the weight gradient then take the event-driven kernels of
/// [`crate::kernels::conv::sparse`] when the input density is at most
/// [`sparse::fwd_max_density`] / [`sparse::wgrad_max_density`] (per-shape switch points), and
/// the dense GEMM path above.
/// That cache is the whole input, so the output can be rebuilt ([`Layer::recompute_output`]):
/// a batch norm after such a conv keeps no f32 input ([`crate::nn::Sequential`]).
///
/// ```
/// use mpsnn::nn::{build::init_rng, conv::Conv2d, spec::Conv2dSpec, ForwardCtx, Layer};
/// use mpsnn::Tensor;
/// let spec = Conv2dSpec { name: "conv1".into(), in_channels: 3, out_channels: 8, kernel: 3,
///                         stride: 2, padding: 1, bias: false };
/// let mut conv = Conv2d::from_spec(&spec, &mut init_rng(0)).unwrap();
/// let y = conv.forward(Tensor::zeros(&[4, 3, 32, 32]), &ForwardCtx::train(2)).unwrap();
/// assert_eq!(y.shape(), &[4, 8, 16, 16]);
/// let dx = conv.backward(Tensor::zeros(&[4, 8, 16, 16])).unwrap();
/// assert_eq!(dx.shape(), &[4, 3, 32, 32]);
/// ```
pub struct Conv2d {
    spec: Conv2dSpec,
    weight: Param,
    bias: Option<Param>,
    cache: Option<(Saved, ConvGeom)>,
    ws: ConvWorkspace,
    input_grad: bool,
    /// Spike density of the last forward's input and the density up to which its shape takes
    /// the event-driven path.
    last_density: Option<(f64, f64)>,
}

/// What a training forward keeps for backward: the f32 input, or the spikes bit-packed.
enum Saved {
    Dense(Tensor),
    Spikes(Arc<SpikeBits>),
}

impl Conv2d {
    /// Builds the layer, drawing the weight (then the bias) from `rng`.
    ///
    /// Fails with [`Error::Spec`] if a channel count, the kernel size or the stride is 0.
    pub fn from_spec(spec: &Conv2dSpec, rng: &mut InitRng) -> Result<Self> {
        let s = spec;
        if s.in_channels == 0 || s.out_channels == 0 || s.kernel == 0 || s.stride == 0 {
            return Err(Error::Spec(format!(
                "{}: conv2d needs nonzero channels, kernel and stride, got {s:?}",
                s.name
            )));
        }
        let fan_in = s.in_channels * s.kernel * s.kernel;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let shape = [s.out_channels, s.in_channels, s.kernel, s.kernel];
        let weight = Tensor::from_vec(&shape, uniform(rng, s.out_channels * fan_in, bound))?;
        let bias = if s.bias {
            let b = Tensor::from_vec(&[s.out_channels], uniform(rng, s.out_channels, bound))?;
            Some(Param::new(format!("{}.bias", s.name), b))
        } else {
            None
        };
        Ok(Conv2d {
            spec: spec.clone(),
            weight: Param::new(format!("{}.weight", s.name), weight),
            bias,
            cache: None,
            ws: ConvWorkspace::default(),
            input_grad: true,
            last_density: None,
        })
    }

    /// Whether backward computes `∂L/∂input` (default `true`). The first layer of a network
    /// turns it off: the image needs no gradient, and backward then returns zeros.
    pub fn set_input_grad(&mut self, on: bool) {
        self.input_grad = on;
    }

    /// The spike density (fraction of nonzero inputs) of the last forward, if its input was a
    /// spike tensor.
    pub fn last_input_density(&self) -> Option<f64> {
        self.last_density.map(|(d, _)| d)
    }

    /// The input density up to which the last forward's shape uses the event-driven path
    /// ([`sparse::fwd_max_density`]), if its input was a spike tensor.
    pub fn last_switch_density(&self) -> Option<f64> {
        self.last_density.map(|(_, max)| max)
    }

    /// The configuration (channels, kernel, stride, padding, bias flag).
    pub fn spec(&self) -> &Conv2dSpec {
        &self.spec
    }

    /// The weight `[out, in, k, k]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The bias `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// Parameters are public fields of [`Param`]; a replaced tensor of the wrong shape is an
    /// error here rather than a panic in a kernel.
    fn check_params(&self) -> Result<()> {
        let s = &self.spec;
        check_param(
            &self.weight,
            &[s.out_channels, s.in_channels, s.kernel, s.kernel],
        )?;
        if let Some(b) = &self.bias {
            check_param(b, &[s.out_channels])?;
        }
        Ok(())
    }

    fn geom(&self, input: &[usize]) -> Result<ConvGeom> {
        let s = &self.spec;
        let [n, c, h, w] = *input else {
            return Err(Error::shape(
                &s.name,
                format!("[N, {}, H, W]", s.in_channels),
                input,
            ));
        };
        if c != s.in_channels {
            return Err(Error::shape(
                &s.name,
                format!("[N, {}, H, W]", s.in_channels),
                input,
            ));
        }
        ConvGeom::new(n, c, h, w, s.out_channels, s.kernel, s.stride, s.padding).ok_or_else(|| {
            Error::shape(
                &s.name,
                format!(
                    "[N, {}, H, W] with H + 2·{p} >= {k} and W + 2·{p} >= {k} (H, W >= 1)",
                    s.in_channels,
                    p = s.padding,
                    k = s.kernel
                ),
                input,
            )
        })
    }
}

/// The forward of a spike input on the path its density selects. `dense` is the same input as
/// f32 if at hand (else it is unpacked from `bits`): both hold exactly 0 or the scale, so the
/// output is the same bits either way, which [`Layer::recompute_output`] relies on.
fn spike_forward(
    g: &ConvGeom,
    bits: &SpikeBits,
    dense: Option<&[f32]>,
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    if bits.density() <= sparse::fwd_max_density(g) {
        let wp = sparse::PackedWeight::new(g, weight);
        sparse::forward(g, bits, &wp, bias, y);
    } else if let Some(x) = dense {
        conv::forward(g, x, weight, bias, y);
    } else {
        let mut x = crate::buffer_pool::overwritable(bits.len());
        bits.unpack(&mut x);
        conv::forward(g, &x, weight, bias, y);
    }
}

/// `Ok` if `p`'s value and gradient have shape `shape`, else [`Error::State`].
pub(crate) fn check_param(p: &Param, shape: &[usize]) -> Result<()> {
    if p.value.shape() != shape || p.grad.shape() != shape {
        return Err(Error::State(format!(
            "{}: expected shape {shape:?}, value is {:?}, gradient {:?}",
            p.name,
            p.value.shape(),
            p.grad.shape()
        )));
    }
    Ok(())
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geom(input)?;
        Ok(vec![g.n, g.c_out, g.oh, g.ow])
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let g = self.geom(input.shape())?;
        self.check_params()?;
        let mut y = crate::buffer_pool::overwritable(g.n * g.out_img());
        let weight = self.weight.value.data();
        let bias = self.bias.as_ref().map(|b| b.value.data());
        let bits = match input.spike_scale() {
            Some(s) if s.is_finite() => input.packed_spikes(g.n, g.c_in, g.h * g.w),
            _ => None,
        };
        let saved = match bits {
            Some(bits) => {
                spike_forward(&g, &bits, Some(input.data()), weight, bias, &mut y);
                self.last_density = Some((bits.density(), sparse::fwd_max_density(&g)));
                Saved::Spikes(bits)
            }
            None => {
                conv::forward(&g, input.data(), weight, bias, &mut y);
                self.last_density = None;
                Saved::Dense(input)
            }
        };
        self.cache = ctx.is_train().then_some((saved, g));
        Tensor::from_vec(&[g.n, g.c_out, g.oh, g.ow], y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let g = match &self.cache {
            Some((_, g)) => *g,
            None => {
                return Err(Error::NoForwardCache {
                    layer: self.spec.name.clone(),
                })
            }
        };
        let want = [g.n, g.c_out, g.oh, g.ow];
        if grad_output.shape() != want {
            return Err(Error::shape(
                &self.spec.name,
                format!("gradient {want:?}"),
                grad_output.shape(),
            ));
        }
        self.check_params()?;
        let (saved, _) = self.cache.take().expect("checked above");
        let dy = grad_output.data();
        let in_shape = [g.n, g.c_in, g.h, g.w];
        // The f32 input, if the path needs it (dense weight gradient); its buffer becomes the
        // input gradient afterwards.
        let mut x: Option<Vec<f32>> = None;
        match &saved {
            Saved::Spikes(bits) if bits.density() <= sparse::wgrad_max_density(&g) => {
                if self.weight.trainable {
                    sparse::backward_weight(&g, bits, dy, self.weight.grad.data_mut());
                }
            }
            Saved::Spikes(bits) => {
                let mut buf = crate::buffer_pool::overwritable(bits.len());
                bits.unpack(&mut buf);
                if self.weight.trainable {
                    let dw = self.weight.grad.data_mut();
                    conv::backward_weight(&g, &buf, dy, dw, &mut self.ws);
                }
                x = Some(buf);
            }
            Saved::Dense(input) => {
                if self.weight.trainable {
                    let dw = self.weight.grad.data_mut();
                    conv::backward_weight(&g, input.data(), dy, dw, &mut self.ws);
                }
            }
        }
        if let Some(b) = self.bias.as_mut().filter(|b| b.trainable) {
            conv::backward_bias(&g, dy, b.grad.data_mut());
        }
        if !self.input_grad {
            return Ok(Tensor::zeros(&in_shape));
        }
        let mut dx = match (saved, x) {
            (_, Some(buf)) => buf,
            (Saved::Dense(input), None) => input.into_vec(),
            (Saved::Spikes(_), None) => crate::buffer_pool::overwritable(g.n * g.in_img()),
        };
        conv::backward_input(&g, dy, self.weight.value.data(), &mut dx);
        Tensor::from_vec(&in_shape, dx)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }

    fn reads_spike_bits(&self) -> bool {
        true
    }

    /// True after a training forward on spikes: the bit-packed cache holds the whole input.
    fn can_recompute_output(&self) -> bool {
        matches!(self.cache, Some((Saved::Spikes(_), _)))
    }

    /// Reruns the forward on the cached spikes (same kernels, same weights: the optimizer steps
    /// only after backward), so a following batch norm need not keep its f32 input.
    fn recompute_output(&mut self) -> Option<Tensor> {
        let Some((Saved::Spikes(bits), g)) = &self.cache else {
            return None;
        };
        let mut y = crate::buffer_pool::overwritable(g.n * g.out_img());
        let bias = self.bias.as_ref().map(|b| b.value.data());
        spike_forward(g, bits, None, self.weight.value.data(), bias, &mut y);
        Tensor::from_vec(&[g.n, g.c_out, g.oh, g.ow], y).ok()
    }

    crate::impl_as_any!();
}
