//! Typed, zero-copy views of the blob's operations and terms, and their syntactic checks.
//!
//! [`read_op`] decodes one operation record and checks everything that needs no context
//! (lengths, finiteness, ranges); [`crate::Model::parse`] adds the checks across records
//! (shapes, buffers, liveness). The runner decodes the same records with the same function, so
//! what runs is exactly what was validated.

use crate::blob::{op, term, F32s, Reader, MAX_T, MAX_TERMS};
use crate::error::Error;
use crate::lif::{LifParams, Reset};

/// A `[C, H, W]` shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// Number of elements, or `None` on overflow.
    pub fn count(&self) -> Option<usize> {
        self.c.checked_mul(self.h)?.checked_mul(self.w)
    }
}

/// Weights of a convolution term, row-major `[C_out, C_in, kh, kw]`.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// f32 weights.
    F32(F32s<'a>),
    /// int8 weights `q` with `w = q · scale[c_out]`.
    I8 {
        /// The quantized weights, one byte each.
        q: &'a [u8],
        /// One scale per output channel.
        scale: F32s<'a>,
    },
}

/// An average pool applied to a term's source before its convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
}

/// Geometry of a convolution term.
#[derive(Clone, Copy, Debug)]
pub struct Conv<'a> {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
    /// Optional average pool on the source (its `1/(kh·kw)` is folded into the weights).
    pub pool: Option<Pool>,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// The weights.
    pub weights: Weights<'a>,
}

/// What a term computes from its source.
#[derive(Clone, Copy, Debug)]
pub enum TermKind<'a> {
    /// A convolution.
    Conv(Conv<'a>),
    /// `scale[c] · x[c, y, x]`.
    Identity(F32s<'a>),
}

/// One synaptic term: a source (input or spike buffer) and what is computed from it.
#[derive(Clone, Copy, Debug)]
pub struct Term<'a> {
    /// Buffer index, or [`crate::blob::SOURCE_INPUT`].
    pub source: u16,
    /// The computation.
    pub kind: TermKind<'a>,
}

/// The terms of one operation.
pub type Terms<'a> = heapless::Vec<Term<'a>, MAX_TERMS>;

/// One decoded operation.
#[derive(Clone, Debug)]
pub enum Op<'a> {
    /// LIF layer writing spikes into buffer `out`.
    Neuron {
        /// Output buffer.
        out: u16,
        /// Output shape.
        shape: Shape,
        /// LIF constants.
        lif: LifParams,
        /// Per-channel bias (BN and conv biases folded).
        bias: F32s<'a>,
        /// Terms summed into the currents.
        terms: Terms<'a>,
    },
    /// OR over windows of buffer `src` into buffer `out`.
    MaxPool {
        /// Source buffer.
        src: u16,
        /// Output buffer.
        out: u16,
        /// Window `(kh, kw)`, stride `(sh, sw)`, padding `(ph, pw)`.
        geom: [usize; 6],
    },
    /// Class scores.
    Readout {
        /// Output shape (`[classes, 1, 1]`).
        shape: Shape,
        /// Per-class bias.
        bias: F32s<'a>,
        /// Terms summed into the logits.
        terms: Terms<'a>,
    },
}

fn invalid(what: &'static str, op: u16) -> Error {
    Error::Invalid { what, op }
}

fn u16s(r: &mut Reader<'_>) -> Result<usize, Error> {
    r.u16().map(usize::from)
}

fn shape(r: &mut Reader<'_>, idx: u16) -> Result<Shape, Error> {
    let s = Shape {
        c: u16s(r)?,
        h: u16s(r)?,
        w: u16s(r)?,
    };
    if r.u16()? != 0 {
        return Err(invalid("reserved field", idx));
    }
    if s.c == 0 || s.h == 0 || s.w == 0 {
        return Err(invalid("zero dimension", idx));
    }
    Ok(s)
}

fn read_term<'a>(r: &mut Reader<'a>, idx: u16, cout: usize) -> Result<Term<'a>, Error> {
    let kind = r.u8()?;
    if r.u8()? != 0 {
        return Err(invalid("reserved field", idx));
    }
    let source = r.u16()?;
    let kind = match kind {
        term::CONV_F32 | term::CONV_I8 => {
            let mut g = [0usize; 10];
            for v in g.iter_mut() {
                *v = u16s(r)?;
            }
            let [kh, kw, stride, pad, pkh, pkw, psh, psw, cin, tcout] = g;
            if kh == 0 || kw == 0 || stride == 0 || cin == 0 {
                return Err(invalid("conv geometry", idx));
            }
            if tcout != cout {
                return Err(invalid("term output channels", idx));
            }
            let pool = match (pkh, pkw, psh, psw) {
                (0, 0, 0, 0) => None,
                (kh, kw, sh, sw) if kh > 0 && kw > 0 && sh > 0 && sw > 0 => {
                    Some(Pool { kh, kw, sh, sw })
                }
                _ => return Err(invalid("pool geometry", idx)),
            };
            let n = cout
                .checked_mul(cin)
                .and_then(|n| n.checked_mul(kh))
                .and_then(|n| n.checked_mul(kw))
                .ok_or(invalid("weight count", idx))?;
            let weights = if kind == term::CONV_F32 {
                Weights::F32(r.finite_array(n, "weight", idx)?)
            } else {
                let q = r.bytes(n)?;
                if q.contains(&0x80) {
                    // -128 has no positive twin; symmetric quantization never writes it.
                    return Err(invalid("int8 weight -128", idx));
                }
                r.align4(idx)?;
                Weights::I8 {
                    q,
                    scale: r.finite_array(cout, "weight scale", idx)?,
                }
            };
            TermKind::Conv(Conv {
                kh,
                kw,
                stride,
                pad,
                pool,
                cin,
                cout,
                weights,
            })
        }
        term::IDENTITY => {
            if u16s(r)? != cout || r.u16()? != 0 {
                return Err(invalid("identity channels", idx));
            }
            TermKind::Identity(r.finite_array(cout, "identity scale", idx)?)
        }
        _ => return Err(invalid("term kind", idx)),
    };
    Ok(Term { source, kind })
}

fn read_terms<'a>(r: &mut Reader<'a>, n: u8, idx: u16, cout: usize) -> Result<Terms<'a>, Error> {
    if n == 0 {
        return Err(invalid("operation without terms", idx));
    }
    let mut terms = Terms::new();
    for _ in 0..n {
        let t = read_term(r, idx, cout)?;
        terms.push(t).map_err(|_| invalid("too many terms", idx))?;
    }
    Ok(terms)
}

/// Decodes the operation record at the reader's position (operation number `idx`), leaving the
/// reader after it. `timesteps` bounds nothing here but is checked by the caller.
pub fn read_op<'a>(r: &mut Reader<'a>, idx: u16) -> Result<Op<'a>, Error> {
    let kind = r.u8()?;
    let n_terms = r.u8()?;
    if r.u16()? != 0 {
        return Err(invalid("reserved field", idx));
    }
    let len = r.u32()? as usize;
    let start = r.pos();
    let end = start
        .checked_add(len)
        .ok_or(invalid("operation length", idx))?;
    let op = match kind {
        op::NEURON => {
            let out = r.u16()?;
            let reset = match r.u8()? {
                0 => Reset::Soft,
                1 => Reset::Hard,
                _ => return Err(invalid("reset kind", idx)),
            };
            if r.u8()? != 0 {
                return Err(invalid("reserved field", idx));
            }
            let shape = shape(r, idx)?;
            let lambda = r.finite("lambda", idx)?;
            let one_minus_lambda = r.finite("one minus lambda", idx)?;
            let theta = r.finite("theta", idx)?;
            let mu = r.finite("mu", idx)?;
            if !(lambda > 0.0 && lambda <= 1.0) {
                return Err(invalid("lambda outside (0, 1]", idx));
            }
            if !(0.0..1.0).contains(&one_minus_lambda) {
                return Err(invalid("one minus lambda outside [0, 1)", idx));
            }
            if theta <= 0.0 {
                return Err(invalid("theta not positive", idx));
            }
            let bias = r.finite_array(shape.c, "bias", idx)?;
            let terms = read_terms(r, n_terms, idx, shape.c)?;
            let lif = LifParams {
                lambda,
                one_minus_lambda,
                theta,
                mu,
                reset,
            };
            Op::Neuron {
                out,
                shape,
                lif,
                bias,
                terms,
            }
        }
        op::MAXPOOL => {
            if n_terms != 0 {
                return Err(invalid("max-pool with terms", idx));
            }
            let src = r.u16()?;
            let out = r.u16()?;
            let mut geom = [0usize; 6];
            for g in geom.iter_mut() {
                *g = usize::from(r.u8()?);
            }
            if r.u16()? != 0 {
                return Err(invalid("reserved field", idx));
            }
            let [kh, kw, sh, sw, ph, pw] = geom;
            // PyTorch's rule `pad <= kernel / 2` also guarantees every window holds a cell.
            if kh == 0 || kw == 0 || sh == 0 || sw == 0 || 2 * ph > kh || 2 * pw > kw {
                return Err(invalid("max-pool geometry", idx));
            }
            Op::MaxPool { src, out, geom }
        }
        op::READOUT => {
            let shape = shape(r, idx)?;
            let bias = r.finite_array(shape.c, "bias", idx)?;
            let terms = read_terms(r, n_terms, idx, shape.c)?;
            Op::Readout { shape, bias, terms }
        }
        _ => return Err(invalid("operation kind", idx)),
    };
    if r.pos() != end {
        return Err(invalid("operation length", idx));
    }
    Ok(op)
}

/// Output size of a window of `k` with stride `s` and padding `p` over `n` cells (floor mode),
/// or `None` when the window does not fit.
pub fn window_out(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    let padded = n.checked_add(p.checked_mul(2)?)?;
    let span = padded.checked_sub(k)?;
    Some(span.checked_div(s)? + 1)
}

/// Checks `T`: `1 ..= MAX_T`.
pub fn check_timesteps(t: usize) -> Result<(), Error> {
    if t == 0 || t > MAX_T {
        Err(invalid("timesteps outside 1..=32", u16::MAX))
    } else {
        Ok(())
    }
}
