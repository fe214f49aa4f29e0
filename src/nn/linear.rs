//! [`Linear`]: the fully connected layer `y = x·Wᵀ + b` on `[N, in]`.

use super::build::{uniform, InitRng};
use super::conv::check_param;
use super::spec::LinearSpec;
use super::{ForwardCtx, Layer, Param};
use crate::error::{Error, Result};
use crate::kernels::gemm::{sgemm_rows_par, MatLayout, ROW_BLOCK};
use crate::kernels::narrow;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Fully connected layer, PyTorch semantics (`nn.Linear`).
///
/// Parameters `<name>.weight` `[out, in]` and (optionally) `<name>.bias` `[out]`, initialised
/// `U(±1/√in)`. Input `[N, in]` (use a `flatten` layer before it), output `[N, out]`.
/// Training mode caches the input; backward reuses its memory for the input gradient.
///
/// ```
/// use mpsnn::nn::{build::init_rng, linear::Linear, spec::LinearSpec, ForwardCtx, Layer};
/// use mpsnn::Tensor;
/// let spec = LinearSpec { name: "fc".into(), in_features: 4, out_features: 2, bias: true };
/// let mut fc = Linear::from_spec(&spec, &mut init_rng(0)).unwrap();
/// let y = fc.forward(Tensor::zeros(&[3, 4]), &ForwardCtx::eval(1)).unwrap();
/// assert_eq!(y.shape(), &[3, 2]);
/// assert_eq!(&y.data()[..2], fc.bias().unwrap().value.data()); // zero input → bias
/// ```
pub struct Linear {
    spec: LinearSpec,
    weight: Param,
    bias: Option<Param>,
    cache: Option<Tensor>,
}

impl Linear {
    /// Builds the layer, drawing the weight (then the bias) from `rng`.
    ///
    /// Fails with [`Error::Spec`] if a width is 0.
    pub fn from_spec(spec: &LinearSpec, rng: &mut InitRng) -> Result<Self> {
        let s = spec;
        if s.in_features == 0 || s.out_features == 0 {
            return Err(Error::Spec(format!(
                "{}: linear needs nonzero widths, got {s:?}",
                s.name
            )));
        }
        let bound = 1.0 / (s.in_features as f32).sqrt();
        let w = uniform(rng, s.out_features * s.in_features, bound);
        let weight = Tensor::from_vec(&[s.out_features, s.in_features], w)?;
        let bias = if s.bias {
            let b = Tensor::from_vec(&[s.out_features], uniform(rng, s.out_features, bound))?;
            Some(Param::new(format!("{}.bias", s.name), b))
        } else {
            None
        };
        Ok(Linear {
            spec: spec.clone(),
            weight: Param::new(format!("{}.weight", s.name), weight),
            bias,
            cache: None,
        })
    }

    /// The configuration (widths, bias flag).
    pub fn spec(&self) -> &LinearSpec {
        &self.spec
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The bias `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// `db[j] += Σ_r dy[r, j]` (summed in f64, rows in order), if the bias is trained.
    fn add_bias_grad(&mut self, dy: &[f32], n: usize) {
        let o = self.spec.out_features;
        if let Some(b) = self.bias.as_mut().filter(|b| b.trainable) {
            b.grad
                .data_mut()
                .par_iter_mut()
                .enumerate()
                .for_each(|(j, g)| {
                    let s: f64 = (0..n).map(|r| dy[r * o + j] as f64).sum();
                    *g += s as f32;
                });
        }
    }

    fn check_params(&self) -> Result<()> {
        let s = &self.spec;
        check_param(&self.weight, &[s.out_features, s.in_features])?;
        if let Some(b) = &self.bias {
            check_param(b, &[s.out_features])?;
        }
        Ok(())
    }
}

impl Layer for Linear {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, i] if i == self.spec.in_features => Ok(vec![n, self.spec.out_features]),
            _ => Err(Error::shape(
                &self.spec.name,
                format!("[N, {}]", self.spec.in_features),
                input,
            )),
        }
    }

    fn forward(&mut self, input: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let out = self.output_shape(input.shape())?;
        self.check_params()?;
        let (n, i, o) = (out[0], self.spec.in_features, self.spec.out_features);
        let mut y = vec![0.0; n * o];
        let beta = match &self.bias {
            Some(b) => {
                for row in y.chunks_exact_mut(o) {
                    row.copy_from_slice(b.value.data());
                }
                1.0
            }
            None => 0.0,
        };
        // Spike inputs take this dense path too; an event-driven variant slots in beside it.
        if o <= narrow::MAX_OUTPUTS {
            narrow::forward(
                input.data(),
                self.weight.value.data(),
                &mut y,
                (n, i, o),
                beta,
            );
            self.cache = ctx.is_train().then_some(input);
            return Tensor::from_vec(&out, y);
        }
        sgemm_rows_par(
            1.0,
            input.data(),
            MatLayout::row_major(n, i),
            self.weight.value.data(),
            MatLayout::row_major(o, i).t(),
            beta,
            &mut y,
            MatLayout::row_major(n, o),
        );
        self.cache = ctx.is_train().then_some(input);
        Tensor::from_vec(&out, y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor> {
        let n = match &self.cache {
            Some(x) => x.shape()[0],
            None => {
                return Err(Error::NoForwardCache {
                    layer: self.spec.name.clone(),
                })
            }
        };
        let (i, o) = (self.spec.in_features, self.spec.out_features);
        if grad_output.shape() != [n, o] {
            return Err(Error::shape(
                &self.spec.name,
                format!("gradient [{n}, {o}]"),
                grad_output.shape(),
            ));
        }
        self.check_params()?;
        let mut x = self.cache.take().expect("checked above");
        let dy = grad_output.data();
        self.add_bias_grad(dy, n);
        if o <= narrow::MAX_OUTPUTS {
            // One pass over the cached input: weight gradient, then the input gradient over it.
            let weight = &mut self.weight;
            let dw = weight.trainable.then(|| weight.grad.data_mut());
            narrow::backward_in_place(dy, weight.value.data(), x.data_mut(), dw, (n, i, o));
            return Ok(x);
        }
        if self.weight.trainable {
            weight_grad(dy, x.data(), n, o, i, self.weight.grad.data_mut());
        }
        // dx = dy·W, written over the cached input (same shape, no longer needed).
        sgemm_rows_par(
            1.0,
            dy,
            MatLayout::row_major(n, o),
            self.weight.value.data(),
            MatLayout::row_major(o, i),
            0.0,
            x.data_mut(),
            MatLayout::row_major(n, i),
        );
        Ok(x)
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

/// `dW[o, i] += Σ_n dy[n, o]·x[n, i]` for `dy: [n, o]`, `x: [n, i]`, `dW: [o, i]`.
///
/// For layers wider than a classifier head (heads, `o` ≤ [`narrow::MAX_OUTPUTS`], take
/// [`narrow::backward_in_place`]). With a few outputs (`o` ≤ [`ROW_BLOCK`]) `dW`'s rows are
/// one GEMM task, so the product runs as `dWᵀ = xᵀ·dy` instead, split over the `i` rows on
/// the pool, into a pooled buffer that is then added transposed: `mnist-cnn`'s `10 × 3136`
/// weight gradient took 1.1 ms of a training step the other way round (one thread, a 10-row
/// GEMM).
fn weight_grad(dy: &[f32], x: &[f32], n: usize, o: usize, i: usize, dw: &mut [f32]) {
    if o > ROW_BLOCK {
        let (a, b) = (MatLayout::row_major(n, o).t(), MatLayout::row_major(n, i));
        sgemm_rows_par(1.0, dy, a, x, b, 1.0, dw, MatLayout::row_major(o, i));
        return;
    }
    let mut dwt = crate::buffer_pool::overwritable(i * o);
    let (a, b) = (MatLayout::row_major(n, i).t(), MatLayout::row_major(n, o));
    sgemm_rows_par(1.0, x, a, dy, b, 0.0, &mut dwt, MatLayout::row_major(i, o));
    dw.par_chunks_mut(i).enumerate().for_each(|(r, row)| {
        for (c, g) in row.iter_mut().enumerate() {
            *g += dwt[c * o + r];
        }
    });
    crate::buffer_pool::give_back(dwt);
}
