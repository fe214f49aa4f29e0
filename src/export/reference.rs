//! An unfolded f64 evaluator of a spec and its state dict: the oracle the export is tested
//! against, independent of the folding path.
//!
//! It follows the std network's eval semantics literally (METHOD.md): conv2d NCHW with zero
//! padding, BatchNorm with running statistics, LIF layers that output `θ·S` (TrSG) or `S`
//! (AS/RS-SG) from `U[0] = μ` with `M = (1−λ)U + λI` and spikes at `M ≥ θ`, floor-mode pools,
//! residual sums, and logits averaged over `T`. Time is folded into the batch (`n = t·B + b`).
//! [`calibrate`] additionally sets BatchNorm running statistics and μ from a batch, so a
//! randomly initialized network has realistic activity for tests and firmware assets.

use crate::error::{Error, Result};
use crate::nn::spec::{Encoding, LayerSpec, SurrogateKind};
use crate::nn::{ModelSpec, StateDict};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Activations: `rows` samples (`T·B`), each `[c, h, w]`.
#[derive(Clone)]
struct Act {
    rows: usize,
    shape: [usize; 3],
    data: Vec<f64>,
}

impl Act {
    fn per_row(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Eval<'a> {
    state: &'a mut StateDict,
    t: usize,
    calibrate: bool,
}

fn get(state: &StateDict, name: &str) -> Result<Vec<f64>> {
    state
        .get(name)
        .map(|t| t.data().iter().map(|&v| f64::from(v)).collect())
        .ok_or_else(|| Error::State(format!("missing tensor {name:?}")))
}

fn set(state: &mut StateDict, name: &str, v: &[f64]) -> Result<()> {
    let shape = state
        .get(name)
        .map(|t| t.shape().to_vec())
        .unwrap_or_else(|| vec![v.len()]);
    state.insert(
        name.to_string(),
        Tensor::from_vec(&shape, v.iter().map(|&x| x as f32).collect())?,
    );
    Ok(())
}

fn window(n: usize, k: usize, s: usize, p: usize) -> usize {
    (n + 2 * p - k) / s + 1
}

impl Eval<'_> {
    fn seq(&mut self, layers: &[LayerSpec], mut x: Act) -> Result<Act> {
        for l in layers {
            x = self.layer(l, x)?;
        }
        Ok(x)
    }

    fn layer(&mut self, layer: &LayerSpec, x: Act) -> Result<Act> {
        let name = layer.name();
        let [c, h, w] = x.shape;
        Ok(match layer {
            LayerSpec::Conv2d(s) => {
                let wt = get(self.state, &format!("{name}.weight"))?;
                let b = if s.bias {
                    get(self.state, &format!("{name}.bias"))?
                } else {
                    vec![0.0; s.out_channels]
                };
                let (k, st, p) = (s.kernel, s.stride, s.padding);
                let (oh, ow) = (window(h, k, st, p), window(w, k, st, p));
                let shape = [s.out_channels, oh, ow];
                let per = s.out_channels * oh * ow;
                let mut data = vec![0.0; x.rows * per];
                data.par_chunks_mut(per)
                    .zip(x.data.par_chunks(c * h * w))
                    .for_each(|(out, inp)| {
                        for co in 0..s.out_channels {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let mut acc = 0.0;
                                    for ci in 0..c {
                                        for ky in 0..k {
                                            let iy = (oy * st + ky) as isize - p as isize;
                                            if iy < 0 || iy >= h as isize {
                                                continue;
                                            }
                                            for kx in 0..k {
                                                let ix = (ox * st + kx) as isize - p as isize;
                                                if ix < 0 || ix >= w as isize {
                                                    continue;
                                                }
                                                acc += wt[((co * c + ci) * k + ky) * k + kx]
                                                    * inp[(ci * h + iy as usize) * w + ix as usize];
                                            }
                                        }
                                    }
                                    out[(co * oh + oy) * ow + ox] = acc + b[co];
                                }
                            }
                        }
                    });
                Act {
                    rows: x.rows,
                    shape,
                    data,
                }
            }
            LayerSpec::Linear(s) => {
                let wt = get(self.state, &format!("{name}.weight"))?;
                let b = if s.bias {
                    get(self.state, &format!("{name}.bias"))?
                } else {
                    vec![0.0; s.out_features]
                };
                let n_in = x.per_row();
                let mut data = vec![0.0; x.rows * s.out_features];
                data.par_chunks_mut(s.out_features)
                    .zip(x.data.par_chunks(n_in))
                    .for_each(|(out, inp)| {
                        for (o, y) in out.iter_mut().enumerate() {
                            *y = wt[o * n_in..(o + 1) * n_in]
                                .iter()
                                .zip(inp)
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                + b[o];
                        }
                    });
                Act {
                    rows: x.rows,
                    shape: [s.out_features, 1, 1],
                    data,
                }
            }
            LayerSpec::Batchnorm2d(s) => {
                let hw = h * w;
                if self.calibrate {
                    let mut mean = vec![0.0; c];
                    let mut var = vec![0.0; c];
                    for ch in 0..c {
                        let vals = (0..x.rows)
                            .flat_map(|r| x.data[(r * c + ch) * hw..(r * c + ch + 1) * hw].iter());
                        let cnt = (x.rows * hw) as f64;
                        let m = vals.clone().sum::<f64>() / cnt;
                        mean[ch] = m;
                        var[ch] = vals.map(|v| (v - m) * (v - m)).sum::<f64>() / cnt;
                    }
                    set(self.state, &format!("{name}.running_mean"), &mean)?;
                    set(self.state, &format!("{name}.running_var"), &var)?;
                }
                let g = get(self.state, &format!("{name}.gamma"))?;
                let be = get(self.state, &format!("{name}.beta"))?;
                let rm = get(self.state, &format!("{name}.running_mean"))?;
                let rv = get(self.state, &format!("{name}.running_var"))?;
                let eps = f64::from(s.eps);
                let mut data = x.data;
                for (i, v) in data.iter_mut().enumerate() {
                    let ch = (i / hw) % c;
                    *v = g[ch] * (*v - rm[ch]) / (rv[ch] + eps).sqrt() + be[ch];
                }
                Act { data, ..x }
            }
            LayerSpec::Lif(s) => {
                let k = get(self.state, &format!("{name}.k"))?[0];
                let wv = get(self.state, &format!("{name}.w"))?[0];
                let theta = (1.0 + k.exp()).ln();
                let lambda = 1.0 / (1.0 + (-wv).exp());
                let mu = if s.mp_init {
                    get(self.state, &format!("{name}.mu"))?[0]
                } else {
                    0.0
                };
                let out_scale = if s.surrogate == SurrogateKind::Trsg {
                    theta
                } else {
                    1.0
                };
                let step = x.rows / self.t * x.per_row();
                let mut data = x.data;
                let (mut sum, mut cnt) = (0.0, 0usize);
                for i in 0..step {
                    let mut u = mu;
                    let mut active = false;
                    for t in 0..self.t {
                        let v = &mut data[t * step + i];
                        let m = (1.0 - lambda) * u + lambda * *v;
                        let spike = m >= theta;
                        u = match (spike, s.reset) {
                            (false, _) => m,
                            (true, crate::nn::spec::Reset::Soft) => m - theta,
                            (true, crate::nn::spec::Reset::Hard) => 0.0,
                        };
                        *v = if spike { out_scale } else { 0.0 };
                        active |= spike;
                    }
                    if active {
                        sum += u;
                        cnt += 1;
                    }
                }
                if self.calibrate && s.mp_init && cnt > 0 {
                    set(self.state, &format!("{name}.mu"), &[sum / cnt as f64])?;
                }
                Act { data, ..x }
            }
            LayerSpec::Maxpool2d(s) | LayerSpec::Avgpool2d(s) => {
                let is_max = matches!(layer, LayerSpec::Maxpool2d(_));
                let (k, st, p) = (s.kernel, s.stride(), s.padding);
                let (oh, ow) = (window(h, k, st, p), window(w, k, st, p));
                let mut data = vec![0.0; x.rows * c * oh * ow];
                for r in 0..x.rows * c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = if is_max { f64::NEG_INFINITY } else { 0.0 };
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * st + ky) as isize - p as isize;
                                    let ix = (ox * st + kx) as isize - p as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let v = x.data[(r * h + iy as usize) * w + ix as usize];
                                    acc = if is_max { acc.max(v) } else { acc + v };
                                }
                            }
                            data[(r * oh + oy) * ow + ox] =
                                if is_max { acc } else { acc / (k * k) as f64 };
                        }
                    }
                }
                Act {
                    rows: x.rows,
                    shape: [c, oh, ow],
                    data,
                }
            }
            LayerSpec::GlobalAvgpool2d(_) => {
                let hw = h * w;
                let data = x
                    .data
                    .chunks(hw)
                    .map(|ch| ch.iter().sum::<f64>() / hw as f64)
                    .collect();
                Act {
                    rows: x.rows,
                    shape: [c, 1, 1],
                    data,
                }
            }
            LayerSpec::Flatten(_) => Act {
                shape: [c * h * w, 1, 1],
                ..x
            },
            LayerSpec::Dropout(_) | LayerSpec::Repeat(_) => x,
            LayerSpec::Residual(s) => {
                let side = self.seq(&s.shortcut, x.clone())?;
                let mut body = self.seq(&s.body, x)?;
                body.data
                    .iter_mut()
                    .zip(&side.data)
                    .for_each(|(a, b)| *a += b);
                body
            }
        })
    }
}

fn run(
    spec: &ModelSpec,
    state: &mut StateDict,
    input: &[f32],
    batch: usize,
    t: usize,
    calibrate: bool,
) -> Result<Vec<f64>> {
    let per: usize = spec.input.iter().product();
    let data: Vec<f64> = match spec.encoding {
        Encoding::Direct => {
            if input.len() != batch * per {
                return Err(Error::InvalidArgument(format!(
                    "reference: input length {} != {batch}·{per}",
                    input.len()
                )));
            }
            (0..t)
                .flat_map(|_| input.iter().map(|&v| f64::from(v)))
                .collect()
        }
        Encoding::Frames => {
            if input.len() != t * batch * per {
                return Err(Error::InvalidArgument(
                    "reference: frames input length".into(),
                ));
            }
            input.iter().map(|&v| f64::from(v)).collect()
        }
    };
    let x = Act {
        rows: t * batch,
        shape: [spec.input[0], spec.input[1], spec.input[2]],
        data,
    };
    let out = Eval {
        state,
        t,
        calibrate,
    }
    .seq(&spec.layers, x)?;
    let k = spec.classes;
    let mut mean = vec![0.0; batch * k];
    for tt in 0..t {
        for (m, v) in mean
            .iter_mut()
            .zip(&out.data[tt * batch * k..(tt + 1) * batch * k])
        {
            *m += v / t as f64;
        }
    }
    Ok(mean)
}

/// Mean-over-T logits `[batch, classes]` of `spec` in eval mode on `input` (`[B, C, H, W]`
/// normalized, or `[T·B, C, H, W]` frames).
pub fn evaluate(
    spec: &ModelSpec,
    state: &StateDict,
    input: &[f32],
    batch: usize,
    timesteps: usize,
) -> Result<Vec<f64>> {
    let mut state = state.clone();
    run(spec, &mut state, input, batch, timesteps, false)
}

/// Sets every BatchNorm's running statistics to the batch statistics of `input` (layer by
/// layer, later layers seeing calibrated earlier ones) and every MP-Init μ to the mean `U[T]`
/// of the neurons that spiked, as one training pass with momentum 1 would.
pub fn calibrate(
    spec: &ModelSpec,
    state: &mut StateDict,
    input: &[f32],
    batch: usize,
    timesteps: usize,
) -> Result<()> {
    run(spec, state, input, batch, timesteps, true).map(|_| ())
}

/// Predicted classes (first maximal logit) of `[batch, classes]` logits.
pub fn argmax_rows(logits: &[f64], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > r[best] { i } else { best })
        })
        .collect()
}
