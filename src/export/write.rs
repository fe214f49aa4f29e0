//! [`Program`] → blob bytes: scratch planning, optional int8 quantization, serialization in the
//! layout of `docs/blob-format.md`.

use super::ir::{Op, Program, Source, Term, TermKind};
use crate::error::{Error, Result};
use mpsnn_micro::blob::{
    op, term, HEADER_LEN, MAGIC, MAX_BUFFERS, MAX_INPUT_CHANNELS, SOURCE_INPUT, VERSION,
};

/// Offsets (in words) of each buffer in the scratch arena, and the arena size.
///
/// First fit over the buffers live at each op: an op's output never overlaps a buffer it reads
/// (those are live until after it), and a buffer is freed after its last reader.
pub fn plan_scratch(p: &Program) -> (Vec<usize>, usize) {
    let slot = p.timesteps.next_power_of_two();
    let words: Vec<usize> = p
        .buffers
        .iter()
        .map(|s| (s.iter().product::<usize>() * slot).div_ceil(32))
        .collect();
    let mut last_use = vec![0; p.buffers.len()];
    for (i, o) in p.ops.iter().enumerate() {
        for b in o.reads().into_iter().chain(o.writes()) {
            last_use[b] = last_use[b].max(i);
        }
    }
    let mut offset = vec![0; p.buffers.len()];
    let mut live: Vec<usize> = vec![];
    let mut total = 0;
    for (i, o) in p.ops.iter().enumerate() {
        if let Some(b) = o.writes() {
            let mut taken: Vec<(usize, usize)> = live
                .iter()
                .map(|&l| (offset[l], offset[l] + words[l]))
                .collect();
            taken.sort_unstable();
            let mut at = 0;
            for (s, e) in taken {
                if at + words[b] <= s {
                    break;
                }
                at = at.max(e);
            }
            offset[b] = at;
            total = total.max(at + words[b]);
            live.push(b);
        }
        live.retain(|&l| last_use[l] > i);
    }
    (offset, total)
}

/// Words of the runtime's per-channel current workspace (see `mpsnn_micro::Model::scratch_words`):
/// `H·W·T` per accumulator for each operation with a conv term on spikes without a pool, two
/// accumulators (f32 and i32) when those terms are int8.
pub fn workspace_words(p: &Program, int8: bool) -> usize {
    let mut words = 0;
    for op in &p.ops {
        if let Op::Neuron { shape, terms, .. } | Op::Readout { shape, terms, .. } = op {
            let scatter = terms.iter().any(|t| {
                t.source != Source::Input && matches!(t.kind, TermKind::Conv { pool: None, .. })
            });
            if scatter {
                words = words.max(shape[1] * shape[2] * p.timesteps);
            }
        }
    }
    if int8 {
        2 * words
    } else {
        words
    }
}

/// Symmetric per-output-channel int8: `w ≈ q·s`, `s = max|w| / 127`, `q ∈ [−127, 127]`.
pub fn quantize_rows(w: &[f64], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let n = w.len() / rows;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for row in w.chunks(n) {
        let max = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let s = (max / 127.0) as f32;
        scales.push(s);
        q.extend(row.iter().map(|&v| {
            if s > 0.0 {
                (v / f64::from(s)).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        }));
    }
    (q, scales)
}

/// Serialization options.
#[derive(Clone, Debug)]
pub struct Layout<'a> {
    /// int8 weights for conv/linear terms.
    pub int8: bool,
    /// Per-channel input mean.
    pub mean: &'a [f32],
    /// Per-channel input std.
    pub std: &'a [f32],
    /// Raw-input divisor (`255` for `u8` pixels).
    pub u8_div: f32,
}

/// Byte counts of a serialized blob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Whole blob.
    pub blob: usize,
    /// Weights, scales, biases and LIF constants.
    pub params: usize,
    /// Scratch the runtime needs.
    pub scratch: usize,
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: usize, what: &str) -> Result<()> {
        let v = u16::try_from(v)
            .map_err(|_| Error::Unsupported(format!("micro export: {what} = {v} exceeds 65535")))?;
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn u32(&mut self, v: usize) -> Result<()> {
        let v = u32::try_from(v)
            .map_err(|_| Error::Unsupported(format!("micro export: {v} exceeds u32")))?;
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32s(&mut self, v: &[f64]) -> usize {
        v.iter().for_each(|&x| self.f32(x as f32));
        4 * v.len()
    }
    fn align4(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
    fn shape(&mut self, s: [usize; 3]) -> Result<()> {
        for (d, what) in s.iter().zip(["channels", "height", "width"]) {
            self.u16(*d, what)?;
        }
        self.u16(0, "reserved")
    }
}

fn source(s: Source) -> usize {
    match s {
        Source::Input => usize::from(SOURCE_INPUT),
        Source::Buf(b) => b,
    }
}

/// Writes one term; returns its parameter bytes.
///
/// With `int8`, only terms on spike inputs are quantized: the analog stem keeps f32 weights.
/// It is tiny (`C_in·k²·C_out` weights) and runs once per image, but with direct encoding its
/// current is presented unchanged at every timestep, so a rounding error moves a neuron's
/// whole spike train; measured on a `mnist-cnn`-shaped network, an int8 stem caused most of
/// the int8/f32 disagreement (13 of 300 test images vs 2 of 300 for all other layers).
fn write_term(o: &mut W, t: &Term, int8: bool) -> Result<usize> {
    let int8 = int8 && t.source != Source::Input;
    Ok(match &t.kind {
        TermKind::Conv {
            kh,
            kw,
            stride,
            pad,
            pool,
            cin,
            cout,
            w,
        } => {
            o.u8(if int8 { term::CONV_I8 } else { term::CONV_F32 });
            o.u8(0);
            o.u16(source(t.source), "source")?;
            let [pkh, pkw, psh, psw] = pool.unwrap_or([0; 4]);
            for (v, what) in [
                (*kh, "kernel"),
                (*kw, "kernel"),
                (*stride, "stride"),
                (*pad, "padding"),
                (pkh, "pool"),
                (pkw, "pool"),
                (psh, "pool"),
                (psw, "pool"),
                (*cin, "channels"),
                (*cout, "channels"),
            ] {
                o.u16(v, what)?;
            }
            if int8 {
                let (q, s) = quantize_rows(w, *cout);
                o.0.extend(q.iter().map(|&v| v as u8));
                o.align4();
                s.iter().for_each(|&v| o.f32(v));
                q.len() + 4 * s.len()
            } else {
                o.f32s(w)
            }
        }
        TermKind::Identity { scale } => {
            o.u8(term::IDENTITY);
            o.u8(0);
            o.u16(source(t.source), "source")?;
            o.u16(scale.len(), "channels")?;
            o.u16(0, "reserved")?;
            o.f32s(scale)
        }
    })
}

/// Serializes `p`; returns the blob and its sizes.
pub fn write(p: &Program, l: &Layout<'_>) -> Result<(Vec<u8>, Sizes)> {
    let [c, h, w] = p.input;
    if l.mean.len() != c || l.std.len() != c || c > MAX_INPUT_CHANNELS {
        return Err(Error::InvalidArgument(format!(
            "micro export: input normalization needs {c} means and stds (at most {MAX_INPUT_CHANNELS} channels)"
        )));
    }
    if l.std.iter().any(|&s| s == 0.0 || !s.is_finite()) || l.u8_div.is_nan() || l.u8_div <= 0.0 {
        return Err(Error::InvalidArgument(
            "micro export: input std and u8 divisor must be non-zero".into(),
        ));
    }
    if p.buffers.len() > MAX_BUFFERS {
        return Err(Error::Unsupported(format!(
            "micro export: {} spike buffers (at most {MAX_BUFFERS})",
            p.buffers.len()
        )));
    }
    let (offsets, buffer_words) = plan_scratch(p);
    let scratch = buffer_words + workspace_words(p, l.int8);
    let mut o = W(Vec::new());
    o.0.extend_from_slice(&MAGIC);
    o.0.extend_from_slice(&VERSION.to_le_bytes());
    o.0.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // flags, length, CRC: patched below
    debug_assert_eq!(o.0.len(), HEADER_LEN);
    o.u8(p.timesteps as u8);
    o.u8(u8::from(p.frames));
    o.u16(p.classes, "classes")?;
    o.u16(p.buffers.len(), "buffers")?;
    o.u16(p.ops.len(), "operations")?;
    o.shape([c, h, w])?;
    o.u32(scratch)?;
    o.f32(l.u8_div);
    l.mean.iter().chain(l.std).for_each(|&v| o.f32(v));
    for (s, off) in p.buffers.iter().zip(&offsets) {
        o.shape(*s)?;
        o.u32(*off)?;
    }
    let mut params = 0;
    for op in &p.ops {
        let at = o.0.len();
        let n_terms = match op {
            Op::Neuron { terms, .. } | Op::Readout { terms, .. } => terms.len(),
            Op::MaxPool { .. } => 0,
        };
        o.u8(match op {
            Op::Neuron { .. } => op::NEURON,
            Op::MaxPool { .. } => op::MAXPOOL,
            Op::Readout { .. } => op::READOUT,
        });
        o.u8(n_terms as u8);
        o.u16(0, "reserved")?;
        o.u32(0)?; // body length, patched below
        match op {
            Op::Neuron {
                out,
                shape,
                lif,
                bias,
                terms,
                ..
            } => {
                o.u16(*out, "buffer")?;
                o.u8(match lif.reset {
                    mpsnn_micro::lif::Reset::Soft => 0,
                    mpsnn_micro::lif::Reset::Hard => 1,
                });
                o.u8(0);
                o.shape(*shape)?;
                [lif.lambda, lif.one_minus_lambda, lif.theta, lif.mu]
                    .iter()
                    .for_each(|&v| o.f32(v));
                params += 16 + o.f32s(bias);
                for t in terms {
                    params += write_term(&mut o, t, l.int8)?;
                }
            }
            Op::MaxPool {
                src,
                out,
                geom,
                name,
            } => {
                o.u16(*src, "buffer")?;
                o.u16(*out, "buffer")?;
                for g in geom {
                    o.u8(u8::try_from(*g).map_err(|_| {
                        Error::Unsupported(format!(
                            "micro export: max-pool {name}: geometry above 255"
                        ))
                    })?);
                }
                o.u16(0, "reserved")?;
            }
            Op::Readout { shape, bias, terms } => {
                o.shape(*shape)?;
                params += o.f32s(bias);
                for t in terms {
                    params += write_term(&mut o, t, l.int8)?;
                }
            }
        }
        let len = (o.0.len() - at - 8) as u32;
        o.0[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    }
    let total = o.0.len();
    let total32 = u32::try_from(total)
        .map_err(|_| Error::Unsupported("micro export: blob above 4 GiB".into()))?;
    o.0[8..12].copy_from_slice(&total32.to_le_bytes());
    let crc = crc32fast::hash(&o.0[HEADER_LEN..]);
    o.0[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok((
        o.0,
        Sizes {
            blob: total,
            params,
            scratch: scratch * 4,
        },
    ))
}
