//! [`Conv2d`]: 2-D convolution on `[T·B, C, H, W]` (groups = 1, square kernel).

use super::build::{uniform, InitRng};
use super::spec::Conv2dSpec;
use super::{ForwardCtx, Layer, Param};
use crate::error::{Error, Result};
use crate::kernels::conv::{self, ConvGeom, ConvWorkspace};
use crate::tensor::Tensor;

/// 2-D convolution, PyTorch semantics (`nn.Conv2d` with `groups = 1`, zero padding).
///
/// Parameters: `<name>.weight` `[out, in, k, k]` and, if the spec asks for it, `<name>.bias`
/// `[out]`, both initialised `U(±1/√(in·k·k))` as PyTorch does. Training mode caches the input
/// (not the im2col matrix, which backward recomputes to keep memory low); backward reuses the
/// cached input's memory for the input gradient.
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
    cache: Option<(Tensor, ConvGeom)>,
    ws: ConvWorkspace,
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
        })
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
        let mut y = vec![0.0; g.n * g.out_img()];
        // Spike inputs (`input.spike_scale()`) take the dense path as well; an event-driven
        // kernel for mostly-zero spikes (DESIGN.md principle 2) slots in here beside it.
        conv::forward(
            &g,
            input.data(),
            self.weight.value.data(),
            self.bias.as_ref().map(|b| b.value.data()),
            &mut y,
        );
        self.cache = ctx.is_train().then_some((input, g));
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
        let (mut input, _) = self.cache.take().expect("checked above");
        let dy = grad_output.data();
        if self.weight.trainable {
            conv::backward_weight(
                &g,
                input.data(),
                dy,
                self.weight.grad.data_mut(),
                &mut self.ws,
            );
        }
        if let Some(b) = self.bias.as_mut().filter(|b| b.trainable) {
            conv::backward_bias(&g, dy, b.grad.data_mut());
        }
        // The input is no longer needed: its buffer becomes the input gradient.
        conv::backward_input(&g, dy, self.weight.value.data(), input.data_mut());
        Ok(input)
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

    crate::impl_as_any!();
}
