//! Spec + state dict → [`Program`]: BatchNorm and threshold folding (METHOD.md §3.5).
//!
//! The walk carries the value flowing between layers as a `Val`: the analog input, a spike
//! map (binary in the runtime, `scale·S` in the std network), an average-pooled spike map that
//! only a conv/linear may consume, or a pending affine pre-activation (a sum of terms plus a
//! bias) that the next LIF layer or the readout turns into an operation. Folding happens on the
//! way: a conv/linear reading `scale·S` gets `W·scale`; a BatchNorm scales the pending terms and
//! bias per channel; a spike map added in a residual sum becomes an identity term with that
//! scale; an average pool moves into its consumer's term with `1/(kh·kw)` in the weights.

use super::ir::{Lif, Op, Program, Source, Term, TermKind};
use crate::error::{Error, Result};
use crate::neuron::mp_init::initial_potential;
use crate::neuron::params::Derived;
use crate::nn::spec::{Encoding, LayerSpec, Reset, SurrogateKind};
use crate::nn::{ModelSpec, StateDict};
use mpsnn_micro::blob::MAX_TERMS;

/// The value between layers.
#[derive(Clone, Debug)]
enum Val {
    Analog([usize; 3]),
    Spikes {
        buf: usize,
        shape: [usize; 3],
        /// What one spike is worth in the std network (θ for TrSG, 1 for AS/RS-SG).
        scale: f64,
        from: String,
    },
    Pooled {
        buf: usize,
        shape: [usize; 3],
        pool: [usize; 4],
        scale: f64,
        from: String,
        by: String,
    },
    Pending {
        shape: [usize; 3],
        terms: Vec<Term>,
        bias: Vec<f64>,
    },
}

impl Val {
    fn shape(&self) -> [usize; 3] {
        match self {
            Val::Analog(s) => *s,
            Val::Spikes { shape, .. } | Val::Pooled { shape, .. } | Val::Pending { shape, .. } => {
                *shape
            }
        }
    }
}

struct Compiler<'a> {
    state: &'a StateDict,
    buffers: Vec<[usize; 3]>,
    ops: Vec<Op>,
    foldings: Vec<String>,
    seen_lif: bool,
    frames: bool,
}

fn unsupported(layer: &str, what: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("micro export: layer {layer:?}: {what}"))
}

impl Compiler<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let t = self
            .state
            .get(name)
            .ok_or_else(|| Error::State(format!("missing tensor {name:?}")))?;
        if t.shape() != shape {
            return Err(Error::State(format!(
                "tensor {name:?} has shape {:?}, the spec needs {shape:?}",
                t.shape()
            )));
        }
        Ok(t.data().iter().map(|&v| f64::from(v)).collect())
    }

    fn scalar(&self, name: &str) -> Result<f32> {
        Ok(self.tensor(name, &[1])?[0] as f32)
    }

    fn new_buffer(&mut self, shape: [usize; 3]) -> usize {
        self.buffers.push(shape);
        self.buffers.len() - 1
    }

    /// Turns a value into a pending sum of terms (for a LIF, BN, residual sum or readout).
    fn pending(&mut self, v: Val, consumer: &str) -> Result<(Vec<Term>, Vec<f64>, [usize; 3])> {
        Ok(match v {
            Val::Pending { shape, terms, bias } => (terms, bias, shape),
            Val::Analog(shape) => {
                let term = Term {
                    source: Source::Input,
                    kind: TermKind::Identity {
                        scale: vec![1.0; shape[0]],
                    },
                };
                (vec![term], vec![0.0; shape[0]], shape)
            }
            Val::Spikes {
                buf,
                shape,
                scale,
                from,
            } => {
                self.foldings.push(format!(
                    "θ-scale {scale:.6} of {from} → per-channel identity scale in {consumer}"
                ));
                let term = Term {
                    source: Source::Buf(buf),
                    kind: TermKind::Identity {
                        scale: vec![scale; shape[0]],
                    },
                };
                (vec![term], vec![0.0; shape[0]], shape)
            }
            Val::Pooled { by, .. } => {
                return Err(unsupported(
                    consumer,
                    format!(
                        "average pool {by:?} must feed a conv2d or linear layer, not this layer"
                    ),
                ))
            }
        })
    }

    /// A conv/linear term on `v` with raw weights `w` `[cout, cin, kh, kw]`.
    #[allow(clippy::too_many_arguments)]
    fn synapse(
        &mut self,
        name: &str,
        v: Val,
        mut w: Vec<f64>,
        geom: [usize; 4],
        cout: usize,
        bias: Vec<f64>,
        out: [usize; 3],
    ) -> Result<Val> {
        let [kh, kw, stride, pad] = geom;
        let (source, pool, cin) = match v {
            Val::Analog(s) => (Source::Input, None, s[0]),
            Val::Spikes {
                buf,
                shape,
                scale,
                from,
            } => {
                w.iter_mut().for_each(|x| *x *= scale);
                self.foldings
                    .push(format!("θ-scale {scale:.6} of {from} → weights of {name}"));
                (Source::Buf(buf), None, shape[0])
            }
            Val::Pooled {
                buf,
                shape,
                pool,
                scale,
                from,
                by,
                ..
            } => {
                let f = scale / (pool[0] * pool[1]) as f64;
                w.iter_mut().for_each(|x| *x *= f);
                self.foldings.push(format!(
                    "θ-scale {scale:.6} of {from} and average pool {by} (1/{}) → weights of {name}",
                    pool[0] * pool[1]
                ));
                (Source::Buf(buf), Some(pool), shape[0])
            }
            Val::Pending { .. } => {
                return Err(unsupported(
                    name,
                    "a conv2d/linear must read the input, a LIF output or a pooled LIF output \
                     (two affine layers without a LIF between are not supported)",
                ))
            }
        };
        let term = Term {
            source,
            kind: TermKind::Conv {
                kh,
                kw,
                stride,
                pad,
                pool,
                cin,
                cout,
                w,
            },
        };
        Ok(Val::Pending {
            shape: out,
            terms: vec![term],
            bias,
        })
    }

    fn seq(&mut self, layers: &[LayerSpec], mut v: Val, mut flat: bool) -> Result<(Val, bool)> {
        for layer in layers {
            (v, flat) = self.layer(layer, v, flat)?;
        }
        Ok((v, flat))
    }

    fn layer(&mut self, layer: &LayerSpec, v: Val, flat: bool) -> Result<(Val, bool)> {
        let name = layer.name();
        let [c, h, w] = v.shape();
        Ok(match layer {
            LayerSpec::Conv2d(s) => {
                if flat {
                    return Err(unsupported(name, "conv2d after flatten"));
                }
                if s.in_channels != c {
                    return Err(Error::shape(
                        name,
                        format!("[N, {}, H, W]", s.in_channels),
                        &[c, h, w],
                    ));
                }
                let k = s.kernel;
                let oh = (h + 2 * s.padding).checked_sub(k).map(|x| x / s.stride + 1);
                let ow = (w + 2 * s.padding).checked_sub(k).map(|x| x / s.stride + 1);
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return Err(Error::shape(
                        name,
                        format!("H, W >= kernel {k} after padding"),
                        &[c, h, w],
                    ));
                };
                let wt = self.tensor(&format!("{name}.weight"), &[s.out_channels, c, k, k])?;
                let bias = if s.bias {
                    self.tensor(&format!("{name}.bias"), &[s.out_channels])?
                } else {
                    vec![0.0; s.out_channels]
                };
                let out = [s.out_channels, oh, ow];
                (
                    self.synapse(
                        name,
                        v,
                        wt,
                        [k, k, s.stride, s.padding],
                        s.out_channels,
                        bias,
                        out,
                    )?,
                    false,
                )
            }
            LayerSpec::Linear(s) => {
                if s.in_features != c * h * w {
                    return Err(Error::shape(
                        name,
                        format!("[N, {}]", s.in_features),
                        &[c, h, w],
                    ));
                }
                let wt =
                    self.tensor(&format!("{name}.weight"), &[s.out_features, s.in_features])?;
                let bias = if s.bias {
                    self.tensor(&format!("{name}.bias"), &[s.out_features])?
                } else {
                    vec![0.0; s.out_features]
                };
                let out = [s.out_features, 1, 1];
                (
                    self.synapse(name, v, wt, [h, w, 1, 0], s.out_features, bias, out)?,
                    true,
                )
            }
            LayerSpec::Batchnorm2d(s) => {
                if s.num_features != c || flat {
                    return Err(Error::shape(
                        name,
                        format!("[N, {}, H, W]", s.num_features),
                        &[c, h, w],
                    ));
                }
                let gamma = self.tensor(&format!("{name}.gamma"), &[c])?;
                let beta = self.tensor(&format!("{name}.beta"), &[c])?;
                let mean = self.tensor(&format!("{name}.running_mean"), &[c])?;
                let var = self.tensor(&format!("{name}.running_var"), &[c])?;
                let eps = f64::from(s.eps);
                let g: Vec<f64> = gamma
                    .iter()
                    .zip(&var)
                    .map(|(&ga, &va)| ga / (va + eps).sqrt())
                    .collect();
                let what = match &v {
                    Val::Pending { terms, .. }
                        if terms
                            .iter()
                            .all(|t| matches!(t.kind, TermKind::Conv { .. })) =>
                    {
                        "weights and bias"
                    }
                    _ => "identity scale and bias",
                };
                let (mut terms, bias, shape) = self.pending(v, name)?;
                terms.iter_mut().for_each(|t| t.kind.scale_out_channels(&g));
                let bias = (0..c)
                    .map(|i| (bias[i] - mean[i]) * g[i] + beta[i])
                    .collect();
                self.foldings
                    .push(format!("batchnorm {name} (eval statistics) → {what}"));
                (Val::Pending { shape, terms, bias }, flat)
            }
            LayerSpec::Lif(s) => {
                let (terms, bias, shape) = self.pending(v, name)?;
                if terms.len() > MAX_TERMS {
                    return Err(unsupported(
                        name,
                        format!("more than {MAX_TERMS} summed inputs"),
                    ));
                }
                // The std layer's own derivation, so θ, λ and 1 − λ are bit-identical to eval.
                let d = Derived::from_raw(
                    self.scalar(&format!("{name}.k"))?,
                    self.scalar(&format!("{name}.w"))?,
                );
                let (theta, lambda, one_minus_lambda) = (d.theta, d.lambda, d.one_minus_lambda);
                let mu = initial_potential(s.mp_init, self.scalar(&format!("{name}.mu"))?);
                if !(theta > 0.0
                    && theta.is_finite()
                    && lambda > 0.0
                    && lambda <= 1.0
                    && mu.is_finite())
                {
                    return Err(unsupported(
                        name,
                        format!("LIF constants out of range (θ = {theta}, λ = {lambda}, μ = {mu})"),
                    ));
                }
                let reset = match s.reset {
                    Reset::Soft => mpsnn_micro::lif::Reset::Soft,
                    Reset::Hard => mpsnn_micro::lif::Reset::Hard,
                };
                let scale = match s.surrogate {
                    SurrogateKind::Trsg => f64::from(theta),
                    SurrogateKind::As | SurrogateKind::Rs => 1.0,
                };
                self.seen_lif = true;
                let out = self.new_buffer(shape);
                let lif = Lif {
                    lambda,
                    one_minus_lambda,
                    theta,
                    mu,
                    reset,
                };
                self.ops.push(Op::Neuron {
                    name: name.to_string(),
                    out,
                    shape,
                    lif,
                    bias,
                    terms,
                });
                (
                    Val::Spikes {
                        buf: out,
                        shape,
                        scale,
                        from: name.to_string(),
                    },
                    flat,
                )
            }
            LayerSpec::Maxpool2d(s) => {
                match v {
                    Val::Spikes {
                        buf, scale, from, ..
                    } if !flat => {
                        let (k, st, p) = (s.kernel, s.stride(), s.padding);
                        if k == 0 || st == 0 || 2 * p > k || k > 255 || st > 255 {
                            return Err(unsupported(name, "max-pool geometry (need 1 <= kernel, stride <= 255, padding <= kernel/2)"));
                        }
                        let (Some(oh), Some(ow)) = (
                            (h + 2 * p).checked_sub(k).map(|x| x / st + 1),
                            (w + 2 * p).checked_sub(k).map(|x| x / st + 1),
                        ) else {
                            return Err(Error::shape(
                                name,
                                format!("H, W >= kernel {k}"),
                                &[c, h, w],
                            ));
                        };
                        let shape = [c, oh, ow];
                        let out = self.new_buffer(shape);
                        self.ops.push(Op::MaxPool {
                            name: name.to_string(),
                            src: buf,
                            out,
                            geom: [k, k, st, st, p, p],
                        });
                        self.foldings.push(format!("max-pool {name} of {from}'s spikes → OR of binary spikes (exact: θ > 0)"));
                        (
                            Val::Spikes {
                                buf: out,
                                shape,
                                scale,
                                from,
                            },
                            false,
                        )
                    }
                    _ => {
                        return Err(unsupported(
                            name,
                            "max-pool must directly follow a LIF layer (or another max-pool)",
                        ))
                    }
                }
            }
            LayerSpec::Avgpool2d(_) | LayerSpec::GlobalAvgpool2d(_) => match v {
                Val::Spikes {
                    buf, scale, from, ..
                } if !flat => {
                    let pool = match layer {
                        LayerSpec::Avgpool2d(s) => {
                            if s.padding != 0 {
                                return Err(unsupported(name, "average pooling with padding"));
                            }
                            [s.kernel, s.kernel, s.stride(), s.stride()]
                        }
                        _ => [h, w, h, w],
                    };
                    if pool.contains(&0) || pool[0] > h || pool[1] > w {
                        return Err(Error::shape(name, "a pool window that fits", &[c, h, w]));
                    }
                    let out = [c, (h - pool[0]) / pool[2] + 1, (w - pool[1]) / pool[3] + 1];
                    (
                        Val::Pooled {
                            buf,
                            shape: out,
                            pool,
                            scale,
                            from,
                            by: name.to_string(),
                        },
                        false,
                    )
                }
                _ => {
                    return Err(unsupported(
                        name,
                        "average pooling must directly follow a LIF layer or max-pool",
                    ))
                }
            },
            LayerSpec::Flatten(_) => (v, true),
            LayerSpec::Dropout(_) => {
                self.foldings
                    .push(format!("dropout {name} dropped (identity in eval)"));
                (v, flat)
            }
            LayerSpec::Repeat(_) => {
                if self.frames || self.seen_lif {
                    return Err(unsupported(
                        name,
                        "repeat must come before the first LIF layer, with direct encoding",
                    ));
                }
                (v, flat)
            }
            LayerSpec::Residual(s) => {
                if !matches!(v, Val::Spikes { .. } | Val::Analog(_)) || flat {
                    return Err(unsupported(
                        name,
                        "a residual block must take a LIF output (or the input)",
                    ));
                }
                let (body, _) = self.seq(&s.body, v.clone(), false)?;
                let (side, _) = self.seq(&s.shortcut, v, false)?;
                let (mut terms, mut bias, shape) = self.pending(body, name)?;
                let (t2, b2, shape2) = self.pending(side, name)?;
                if shape != shape2 {
                    return Err(Error::shape(
                        name,
                        format!("shortcut output {shape:?}"),
                        &shape2,
                    ));
                }
                terms.extend(t2);
                bias.iter_mut().zip(b2).for_each(|(a, b)| *a += b);
                (Val::Pending { shape, terms, bias }, false)
            }
        })
    }
}

/// Compiles `spec` with parameters `state` into runtime operations at `timesteps` steps.
pub fn compile(spec: &ModelSpec, state: &StateDict, timesteps: usize) -> Result<Program> {
    if timesteps == 0 || timesteps > mpsnn_micro::blob::MAX_T {
        return Err(Error::InvalidArgument(format!(
            "micro export: timesteps {timesteps} outside 1..=32"
        )));
    }
    let [c, h, w] = <[usize; 3]>::try_from(spec.input.as_slice())
        .map_err(|_| Error::Spec(format!("input must be [C, H, W], got {:?}", spec.input)))?;
    let frames = spec.encoding == Encoding::Frames;
    let mut comp = Compiler {
        state,
        buffers: vec![],
        ops: vec![],
        foldings: vec![],
        seen_lif: false,
        frames,
    };
    let (v, _) = comp.seq(&spec.layers, Val::Analog([c, h, w]), false)?;
    let (terms, bias, shape) = comp.pending(v, "readout")?;
    if shape != [spec.classes, 1, 1] {
        return Err(Error::shape(
            &spec.name,
            format!("model output [N, {}]", spec.classes),
            &shape,
        ));
    }
    if terms.len() > MAX_TERMS {
        return Err(unsupported(
            "readout",
            format!("more than {MAX_TERMS} summed inputs"),
        ));
    }
    comp.ops.push(Op::Readout { shape, bias, terms });
    Ok(Program {
        timesteps,
        frames,
        input: [c, h, w],
        classes: spec.classes,
        buffers: comp.buffers,
        ops: comp.ops,
        foldings: comp.foldings,
    })
}
