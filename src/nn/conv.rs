//! [`Conv2d`]: 2-D convolution on `[T·B, C, H, W]` (groups = 1, square kernel).

use super::build::{uniform, InitRng};
use super::spec::Conv2dSpec;
use super::{ForwardCtx, Layer, Param};
use crate::error::{Error, Result};
use crate::kernels::bn::PlaneMoments;
use crate::kernels::conv::sparse::{self, PackedWeight, SpikeBits};
use crate::kernels::conv::stem_linear::PlaneTaps;
use crate::kernels::conv::{self, direct, winograd, ConvGeom, ConvWorkspace};
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::sync::Arc;

mod through_bn;

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
/// the dense paths above (for the forward of 3×3 "same" convs with at least 32 channels,
/// Winograd F(4×4, 3×3); of other narrow ones, [`direct`] straight from the bits; otherwise
/// im2col + GEMM).
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
    /// The weight laid out for the event-driven forward, with the weight's
    /// [`Tensor::content_id`] it was packed from: kept between eval forwards (repacking the
    /// weights every pass was 2.3 % of a ResNet-19 inference), dropped after a training one.
    packed: Option<(u64, PackedWeight)>,
    /// Per-plane sums for a stem's weight gradient by linearity
    /// ([`Conv2d::backward_from_stem_taps`]), reused across steps.
    stem_taps: Vec<PlaneTaps>,
    /// Whether training forwards take their output planes' moments
    /// ([`Conv2d::set_output_moments`]).
    want_moments: bool,
    /// The moments of the last forward's output planes, valid if `moments_of` holds that
    /// output's data address (reused across steps).
    moments: Vec<PlaneMoments>,
    moments_of: Option<usize>,
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
            packed: None,
            stem_taps: Vec::new(),
            want_moments: false,
            moments: Vec::new(),
            moments_of: None,
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

impl Conv2d {
    /// Makes training forwards take the [`PlaneMoments`] of their output planes where the
    /// Winograd forward runs (the output planes are then in cache), for a batch norm that
    /// follows ([`Conv2d::take_output_moments`]). Off by default; [`crate::nn::Sequential`]
    /// sets it.
    pub fn set_output_moments(&mut self, on: bool) {
        self.want_moments = on;
    }

    /// The moments of `output`'s planes (`N·C_out`, image-major), if `output` is this conv's
    /// last forward output and that forward took them; each forward's moments are given once.
    pub fn take_output_moments(&mut self, output: &Tensor) -> Option<&[PlaneMoments]> {
        let of = self.moments_of.take()?;
        // The address names the tensor; the length guards a reshaped view of it.
        let same = of == output.data().as_ptr() as usize;
        let planes = match output.shape() {
            [n, c, _, _] => n * c,
            _ => 0,
        };
        (same && planes == self.moments.len()).then_some(&self.moments[..])
    }

    /// The forward of [`Layer::forward`] and [`Layer::forward_ref`].
    fn forward_cow(&mut self, input: Cow<Tensor>, ctx: &ForwardCtx) -> Result<Tensor> {
        let g = self.geom(input.shape())?;
        self.check_params()?;
        self.moments_of = None;
        let mut y = crate::buffer_pool::overwritable(g.n * g.out_img());
        let bits = match input.spike_scale() {
            Some(s) if s.is_finite() => input.packed_spikes(g.n, g.c_in, g.h * g.w),
            _ => None,
        };
        let train = ctx.is_train();
        let take_moments = train && self.want_moments;
        let took_moments;
        let saved = match bits {
            Some(bits) => {
                let how = (!train, take_moments);
                took_moments = self.spike_forward(&g, &bits, Some(input.data()), how, &mut y);
                self.last_density = Some((bits.density(), sparse::fwd_max_density(&g)));
                Saved::Spikes(bits)
            }
            None => {
                let bias = self.bias.as_ref().map(|b| b.value.data());
                let weight = self.weight.value.data();
                let moments = take_moments.then_some(&mut self.moments);
                took_moments = dense_forward(&g, input.data(), weight, bias, &mut y, moments);
                self.last_density = None;
                // Only backward needs the input: a borrowed one is copied in training only.
                Saved::Dense(match input {
                    Cow::Owned(t) => t,
                    Cow::Borrowed(t) if train => t.parallel_clone(),
                    Cow::Borrowed(_) => Tensor::default(),
                })
            }
        };
        self.cache = train.then_some((saved, g));
        let out = Tensor::from_vec(&[g.n, g.c_out, g.oh, g.ow], y)?;
        if took_moments {
            self.moments_of = Some(out.data().as_ptr() as usize);
        }
        Ok(out)
    }

    /// The forward of a spike input on the path its density selects. `dense` is the same input
    /// as f32 if at hand (else it is unpacked from `bits`): both hold exactly 0 or the scale, so
    /// the output is the same bits either way, which [`Layer::recompute_output`] relies on.
    /// `keep_packed`: keep the packed weight for the next forward. `take_moments`: take the
    /// output planes' moments where the path allows ([`dense_forward`]); returns whether it did.
    fn spike_forward(
        &mut self,
        g: &ConvGeom,
        bits: &SpikeBits,
        dense: Option<&[f32]>,
        (keep_packed, take_moments): (bool, bool),
        y: &mut [f32],
    ) -> bool {
        let moments = take_moments.then_some(&mut self.moments);
        let weight = &self.weight.value;
        let bias = self.bias.as_ref().map(|b| b.value.data());
        if bits.density() <= sparse::fwd_max_density(g) {
            let id = weight.content_id();
            let mut packed = match self.packed.take() {
                Some((at, wp)) if at == id && wp.packed_for(g) => wp,
                Some((_, mut wp)) => {
                    wp.pack(g, weight.data());
                    wp
                }
                None => PackedWeight::new(g, weight.data()),
            };
            sparse::forward(g, bits, &packed, bias, y);
            if keep_packed {
                self.packed = Some((id, std::mem::take(&mut packed)));
            }
            false
        } else if direct::preferred(g) && !winograd::f43::preferred(g) {
            direct::forward(g, direct::Input::Spikes(bits), weight.data(), bias, y);
            false
        } else if let Some(x) = dense {
            dense_forward(g, x, weight.data(), bias, y, moments)
        } else {
            let mut x = crate::buffer_pool::overwritable(bits.len());
            bits.unpack(&mut x);
            let took = dense_forward(g, &x, weight.data(), bias, y, moments);
            crate::buffer_pool::give_back(x);
            took
        }
    }
}

/// [`conv::forward`], taking the output planes' moments into `moments` (resized) if given and
/// the path `conv::forward` takes has them (Winograd, or the stem's flat taps). Returns
/// whether it did.
fn dense_forward(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    moments: Option<&mut Vec<PlaneMoments>>,
) -> bool {
    match moments {
        Some(m) if winograd::f43::preferred(g) => {
            m.resize(g.n * g.c_out, PlaneMoments::default());
            winograd::f43::forward_with_moments(g, x, weight, bias, y, m);
            true
        }
        Some(m) if conv::stem_forward::preferred(g) => {
            m.resize(g.n * g.c_out, PlaneMoments::default());
            conv::stem_forward::forward_with_moments(g, x, weight, bias, y, m);
            true
        }
        _ => {
            conv::forward(g, x, weight, bias, y);
            false
        }
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
        self.forward_cow(Cow::Owned(input), ctx)
    }

    /// Copies the input only to keep it for a training backward on dense input: spikes are
    /// kept as bits, and eval keeps nothing.
    fn forward_ref(&mut self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.forward_cow(Cow::Borrowed(input), ctx)
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
            Saved::Spikes(bits)
                if self.weight.trainable
                    && self.input_grad
                    && self.bias.is_none()
                    && conv::weight_grad_reads_spikes(&g) =>
            {
                // Both gradients in one pass over `dy` where the kernels allow.
                let mut dx = crate::buffer_pool::overwritable(g.n * g.in_img());
                let (w, dw) = (self.weight.value.data(), self.weight.grad.data_mut());
                let dy = conv::OutputGrad::Dense(dy);
                conv::backward_spikes_from(&g, bits, dy, w, dw, &mut dx, &mut self.ws);
                return Tensor::from_vec(&in_shape, dx);
            }
            Saved::Spikes(bits) if conv::weight_grad_reads_spikes(&g) => {
                if self.weight.trainable {
                    let dw = self.weight.grad.data_mut();
                    conv::backward_weight_spikes(&g, bits, dy, dw, &mut self.ws);
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
        self.packed = None;
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
        let (bits, g) = (Arc::clone(bits), *g);
        let mut y = crate::buffer_pool::overwritable(g.n * g.out_img());
        self.spike_forward(&g, &bits, None, (false, false), &mut y);
        Tensor::from_vec(&[g.n, g.c_out, g.oh, g.ow], y).ok()
    }

    crate::impl_as_any!();
}

#[cfg(test)]
mod tests;
