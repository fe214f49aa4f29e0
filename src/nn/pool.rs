//! Pooling layers: [`MaxPool2d`], [`AvgPool2d`], [`GlobalAvgPool2d`] (floor mode, NCHW).

use super::spec::PoolSpec;
use super::{ForwardCtx, Layer};
use crate::error::{Error, Result};
use crate::kernels::pool::{self, PoolGeom};
use crate::tensor::Tensor;

fn check_spec(spec: &PoolSpec, kind: &str) -> Result<()> {
    let (k, s, p) = (spec.kernel, spec.stride(), spec.padding);
    if k == 0 || s == 0 || 2 * p > k {
        return Err(Error::Spec(format!(
            "{}: {kind} needs kernel > 0, stride > 0 and padding <= kernel/2, got kernel {k}, \
             stride {s}, padding {p}",
            spec.name
        )));
    }
    Ok(())
}

fn pool_geom(spec: &PoolSpec, input: &[usize]) -> Result<PoolGeom> {
    let (k, p) = (spec.kernel, spec.padding);
    let bad = || {
        Error::shape(
            &spec.name,
            format!("[N, C, H, W] with H + 2·{p} >= {k} and W + 2·{p} >= {k} (H, W >= 1)"),
            input,
        )
    };
    let [n, c, h, w] = *input else {
        return Err(bad());
    };
    PoolGeom::new(n * c, h, w, k, spec.stride(), p).ok_or_else(bad)
}

fn out_shape(input: &[usize], g: &PoolGeom) -> Vec<usize> {
    vec![input[0], input[1], g.oh, g.ow]
}

fn grad_check(name: &str, want: &[usize], got: &Tensor) -> Result<()> {
    if got.shape() != want {
        return Err(Error::shape(
            name,
            format!("gradient {want:?}"),
            got.shape(),
        ));
    }
    Ok(())
}

fn no_cache(name: &str) -> Error {
    Error::NoForwardCache {
        layer: name.to_string(),
    }
}

/// Max pooling (PyTorch `nn.MaxPool2d`, `ceil_mode = false`, implicit `−∞` padding up to
/// `kernel/2`). Ties go to the first maximal element in row-major window order, PyTorch's
/// rule. The output keeps the input's spike hint: the maximum of values in `{0, s}` is in
/// `{0, s}`. Training mode caches the selected input index of every output element (`u32`)
/// and the input shape.
///
/// ```
/// use mpsnn::nn::{pool::MaxPool2d, spec::PoolSpec, ForwardCtx, Layer};
/// use mpsnn::Tensor;
/// let spec = PoolSpec { name: "pool".into(), kernel: 2, stride: None, padding: 0 };
/// let mut p = MaxPool2d::from_spec(&spec).unwrap();
/// let x = Tensor::from_vec(&[1, 1, 2, 2], vec![0.0, 1.0, 1.0, 0.0]).unwrap()
///     .with_spike_scale(Some(1.0));
/// let y = p.forward(x, &ForwardCtx::train(1)).unwrap();
/// assert_eq!((y.data(), y.spike_scale()), (&[1.0][..], Some(1.0)));
/// let dx = p.backward(Tensor::full(&[1, 1, 1, 1], 5.0)).unwrap();
/// assert_eq!(dx.data(), &[0.0, 5.0, 0.0, 0.0]); // the first of the tied maxima
/// ```
pub struct MaxPool2d {
    spec: PoolSpec,
    cache: Option<(Vec<usize>, PoolGeom)>,
    argmax: Vec<u32>,
}

impl MaxPool2d {
    /// Builds the layer; [`Error::Spec`] for a zero kernel or stride, or padding > kernel/2.
    pub fn from_spec(spec: &PoolSpec) -> Result<Self> {
        check_spec(spec, "maxpool2d")?;
        Ok(MaxPool2d {
            spec: spec.clone(),
            cache: None,
            argmax: Vec::new(),
        })
    }

    /// The configuration (kernel, stride, padding).
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    /// The pooling geometry of one `H×W` plane of an `[N, C, H, W]` input (`planes` = 1), or a
    /// shape error.
    pub fn plane_geometry(&self, input: &[usize]) -> Result<PoolGeom> {
        let g = pool_geom(&self.spec, input)?;
        Ok(PoolGeom { planes: 1, ..g })
    }
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        pool_geom(&self.spec, input).map(|g| out_shape(input, &g))
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let g = pool_geom(&self.spec, input.shape())?;
        let out = out_shape(input.shape(), &g);
        let mut y = crate::buffer_pool::overwritable(g.planes * g.out_plane());
        if ctx.is_train() {
            // Reused across steps: resize only grows (or shrinks the length) in steady state.
            self.argmax.resize(y.len(), 0);
            pool::max_forward(&g, input.data(), &mut y, Some(&mut self.argmax));
            self.cache = Some((input.shape().to_vec(), g));
        } else {
            self.cache = None;
            pool::max_forward(&g, input.data(), &mut y, None);
        }
        Ok(Tensor::from_vec(&out, y)?.with_spike_scale(input.spike_scale()))
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let (in_shape, g) = self.cache.take().ok_or_else(|| no_cache(&self.spec.name))?;
        if let Err(e) = grad_check(&self.spec.name, &out_shape(&in_shape, &g), &grad_output) {
            self.cache = Some((in_shape, g));
            return Err(e);
        }
        let mut dx = crate::buffer_pool::overwritable(g.planes * g.in_plane());
        pool::max_backward(&g, grad_output.data(), &self.argmax, &mut dx);
        Tensor::from_vec(&in_shape, dx)
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }

    crate::impl_as_any!();
}

/// Average pooling (PyTorch `nn.AvgPool2d`, `ceil_mode = false`), **padding 0 only**:
/// [`AvgPool2d::from_spec`] returns [`Error::Unsupported`] for any other padding. Training
/// mode caches only the input shape.
///
/// ```
/// use mpsnn::nn::{pool::AvgPool2d, spec::PoolSpec, ForwardCtx, Layer};
/// use mpsnn::Tensor;
/// let spec = PoolSpec { name: "avg".into(), kernel: 2, stride: None, padding: 0 };
/// let mut p = AvgPool2d::from_spec(&spec).unwrap();
/// let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 6.0]).unwrap();
/// assert_eq!(p.forward(x, &ForwardCtx::eval(1)).unwrap().data(), &[3.0]);
/// let padded = PoolSpec { padding: 1, ..spec };
/// assert!(AvgPool2d::from_spec(&padded).is_err());
/// ```
pub struct AvgPool2d {
    spec: PoolSpec,
    cache: Option<(Vec<usize>, PoolGeom)>,
}

impl AvgPool2d {
    /// Builds the layer; [`Error::Unsupported`] for padding ≠ 0, [`Error::Spec`] for a zero
    /// kernel or stride.
    pub fn from_spec(spec: &PoolSpec) -> Result<Self> {
        check_spec(spec, "avgpool2d")?;
        if spec.padding != 0 {
            return Err(Error::Unsupported(format!(
                "{}: avgpool2d supports padding 0 only, got {}",
                spec.name, spec.padding
            )));
        }
        Ok(AvgPool2d {
            spec: spec.clone(),
            cache: None,
        })
    }

    /// The configuration (kernel, stride; padding is always 0).
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }
}

impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        pool_geom(&self.spec, input).map(|g| out_shape(input, &g))
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let g = pool_geom(&self.spec, input.shape())?;
        let out = out_shape(input.shape(), &g);
        let mut y = crate::buffer_pool::overwritable(g.planes * g.out_plane());
        pool::avg_forward(&g, input.data(), &mut y);
        self.cache = ctx.is_train().then(|| (input.shape().to_vec(), g));
        Tensor::from_vec(&out, y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let (in_shape, g) = self.cache.take().ok_or_else(|| no_cache(&self.spec.name))?;
        if let Err(e) = grad_check(&self.spec.name, &out_shape(&in_shape, &g), &grad_output) {
            self.cache = Some((in_shape, g));
            return Err(e);
        }
        let mut dx = crate::buffer_pool::overwritable(g.planes * g.in_plane());
        pool::avg_backward(&g, grad_output.data(), &mut dx);
        Tensor::from_vec(&in_shape, dx)
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }

    crate::impl_as_any!();
}

/// Global average pooling `[N, C, H, W] → [N, C, 1, 1]` (PyTorch `AdaptiveAvgPool2d(1)`).
///
/// ```
/// use mpsnn::nn::{pool::GlobalAvgPool2d, ForwardCtx, Layer};
/// use mpsnn::Tensor;
/// let mut p = GlobalAvgPool2d::new("gap");
/// let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1.0, 3.0, 0.0, 1.0]).unwrap();
/// let y = p.forward(x, &ForwardCtx::train(1)).unwrap();
/// assert_eq!((y.shape(), y.data()), (&[1, 2, 1, 1][..], &[2.0, 0.5][..]));
/// ```
pub struct GlobalAvgPool2d {
    name: String,
    cache: Option<Vec<usize>>,
}

impl GlobalAvgPool2d {
    /// A global average pool named `name`.
    pub fn new(name: &str) -> Self {
        GlobalAvgPool2d {
            name: name.to_string(),
            cache: None,
        }
    }
}

impl Layer for GlobalAvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c, h, w] if h > 0 && w > 0 => Ok(vec![n, c, 1, 1]),
            _ => Err(Error::shape(
                &self.name,
                "[N, C, H, W] with H, W >= 1",
                input,
            )),
        }
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let out = self.output_shape(input.shape())?;
        let hw = input.shape()[2] * input.shape()[3];
        let mut y = vec![0.0; out[0] * out[1]];
        pool::global_avg_forward(input.data(), hw, &mut y);
        self.cache = ctx.is_train().then(|| input.shape().to_vec());
        Tensor::from_vec(&out, y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let in_shape = self.cache.take().ok_or_else(|| no_cache(&self.name))?;
        let want = [in_shape[0], in_shape[1], 1, 1];
        if let Err(e) = grad_check(&self.name, &want, &grad_output) {
            self.cache = Some(in_shape);
            return Err(e);
        }
        let mut dx = crate::buffer_pool::overwritable(in_shape.iter().product());
        pool::global_avg_backward(grad_output.data(), in_shape[2] * in_shape[3], &mut dx);
        Tensor::from_vec(&in_shape, dx)
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }

    crate::impl_as_any!();
}
