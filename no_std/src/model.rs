//! [`Model`]: a validated, zero-copy view of an exported blob.

use crate::blob::{
    F32s, Reader, HEADER_LEN, MAGIC, MAX_BUFFERS, MAX_INPUT_CHANNELS, SOURCE_INPUT, VERSION,
};
use crate::crc::crc32;
use crate::error::Error;
use crate::ops::{check_timesteps, read_op, window_out, Op, Shape, Term, TermKind};

/// How the model's input is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// One static image `[C, H, W]`, presented at every timestep (direct encoding).
    Direct,
    /// One frame per timestep, `[T, C, H, W]` time-major (event data).
    Frames,
}

/// One spike buffer of the scratch arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buffer {
    pub shape: Shape,
    /// First word in the scratch slice.
    pub offset: usize,
    /// Words it occupies.
    pub words: usize,
}

/// An exported model, borrowed from the blob (e.g. in flash) and validated by [`Model::parse`].
///
/// The model holds no per-inference state: each [`Model::run`] is a fresh simulation that starts
/// every neuron at its layer's `U[0] = μ` and keeps spike maps in the caller's scratch, so there
/// is nothing to reset between samples.
#[derive(Clone, Debug)]
pub struct Model<'a> {
    blob: &'a [u8],
    timesteps: usize,
    encoding: Encoding,
    classes: usize,
    input: Shape,
    /// Scratch words the runtime needs (the header's figure).
    scratch_words: usize,
    /// Words at the start of the scratch that hold spike buffers; the workspace follows.
    buf_words: usize,
    /// Words of the per-channel current workspace (f32, then i32 if `ws_int`).
    ws_words: usize,
    ws_int: bool,
    u8_div: f32,
    norm: F32s<'a>,
    buffers_at: usize,
    n_buffers: usize,
    ops_at: usize,
    n_ops: usize,
}

fn invalid(what: &'static str) -> Error {
    Error::Invalid { what, op: u16::MAX }
}

impl<'a> Model<'a> {
    /// Validates `blob` completely and returns a view of it.
    ///
    /// Checks the magic, version, length, CRC32, every field's range, every length and offset,
    /// that each operation's shapes chain (term geometry, buffer shapes), that every buffer lies
    /// inside the scratch arena, that no operation writes a buffer it reads, and that every buffer
    /// read still holds the spikes written for it. Bytes after the header's length are ignored
    /// (flash padding). Never panics, whatever the bytes.
    pub fn parse(blob: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(blob, 0);
        if r.bytes(4)? != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion { found: version });
        }
        if r.u16()? != 0 {
            return Err(invalid("header flags"));
        }
        let total = r.u32()? as usize;
        let stored = r.u32()?;
        let blob = blob
            .get(..total)
            .ok_or(Error::Truncated { at: blob.len() })?;
        let body = blob.get(HEADER_LEN..).ok_or(invalid("header length"))?;
        let computed = crc32(body);
        if computed != stored {
            return Err(Error::BadCrc { stored, computed });
        }
        let mut r = Reader::new(blob, HEADER_LEN);
        let timesteps = usize::from(r.u8()?);
        check_timesteps(timesteps)?;
        let encoding = match r.u8()? {
            0 => Encoding::Direct,
            1 => Encoding::Frames,
            _ => return Err(invalid("encoding")),
        };
        let classes = usize::from(r.u16()?);
        let n_buffers = usize::from(r.u16()?);
        let n_ops = usize::from(r.u16()?);
        let input = Shape {
            c: usize::from(r.u16()?),
            h: usize::from(r.u16()?),
            w: usize::from(r.u16()?),
        };
        if r.u16()? != 0 {
            return Err(invalid("reserved field"));
        }
        if classes == 0 || n_ops == 0 || n_buffers > MAX_BUFFERS {
            return Err(invalid("model counts"));
        }
        if input.c == 0 || input.h == 0 || input.w == 0 || input.c > MAX_INPUT_CHANNELS {
            return Err(invalid("input shape"));
        }
        let scratch_words = r.u32()? as usize;
        let u8_div = r.finite("u8 divisor", u16::MAX)?;
        let norm = r.finite_array(2 * input.c, "input normalization", u16::MAX)?;
        if u8_div <= 0.0 || norm.slice(input.c, input.c).iter().any(|s| s == 0.0) {
            return Err(invalid("input normalization"));
        }
        let buffers_at = r.pos();
        r.bytes(n_buffers.checked_mul(12).ok_or(invalid("buffer table"))?)?;
        let ops_at = r.pos();
        let mut model = Model {
            blob,
            timesteps,
            encoding,
            classes,
            input,
            scratch_words,
            buf_words: scratch_words,
            ws_words: 0,
            ws_int: false,
            u8_div,
            norm,
            buffers_at,
            n_buffers,
            ops_at,
            n_ops,
        };
        let (ws_words, ws_int) = model.workspace()?;
        let ws_total = ws_words
            .checked_mul(if ws_int { 2 } else { 1 })
            .ok_or(invalid("workspace size"))?;
        model.buf_words = scratch_words
            .checked_sub(ws_total)
            .ok_or(invalid("scratch smaller than the workspace"))?;
        model.ws_words = ws_words;
        model.ws_int = ws_int;
        for b in 0..n_buffers {
            model.buffer(b)?;
        }
        let end = model.validate_ops()?;
        if end != blob.len() {
            return Err(invalid("trailing bytes"));
        }
        scratch_words
            .checked_mul(4)
            .ok_or(invalid("scratch size"))?;
        Ok(model)
    }

    /// Timesteps `T` simulated per sample.
    pub fn timesteps(&self) -> usize {
        self.timesteps
    }

    /// Input encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Number of classes (length of the scores [`Model::run`] writes).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Per-frame input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.input.c, self.input.h, self.input.w]
    }

    /// Elements one sample's input must have: `C·H·W` (direct) or `T·C·H·W` (frames).
    pub fn input_len(&self) -> usize {
        // Both factors are at most 2^16 · 2^16 · 2^16 · 32 < 2^53, and on 32-bit targets the
        // caller cannot hold a slice that long anyway: saturate rather than wrap.
        self.input_planes()
            .saturating_mul(self.input.c)
            .saturating_mul(self.input.h)
            .saturating_mul(self.input.w)
    }

    pub(crate) fn input_planes(&self) -> usize {
        match self.encoding {
            Encoding::Direct => 1,
            Encoding::Frames => self.timesteps,
        }
    }

    /// Scratch words (`u32`) [`Model::run`] needs: the spike buffers (live ranges overlapped)
    /// plus a workspace holding one output channel's currents (`H·W·T` f32, and as many i32
    /// for int8 layers) for the layers that accumulate event by event.
    pub fn scratch_words(&self) -> usize {
        self.scratch_words
    }

    /// Scratch size in bytes (`4 · scratch_words`).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_words().saturating_mul(4)
    }

    /// `(spike-buffer words, workspace words per accumulator, int8 accumulator needed)`.
    pub(crate) fn scratch_layout(&self) -> (usize, usize, bool) {
        (self.buf_words, self.ws_words, self.ws_int)
    }

    /// Number of operations (LIF layers, max-pools and the readout).
    pub fn op_count(&self) -> usize {
        self.n_ops
    }

    /// The validated blob bytes (without trailing padding).
    pub fn bytes(&self) -> &'a [u8] {
        self.blob
    }

    pub(crate) fn u8_div(&self) -> f32 {
        self.u8_div
    }

    /// `(mean, std)` of input channel `c`.
    pub(crate) fn norm(&self, c: usize) -> (f32, f32) {
        (self.norm.get(c), self.norm.get(self.input.c + c))
    }

    /// Log2 of the bits each neuron's spike train occupies: the smallest power of two `≥ T`, so
    /// a train never straddles a `u32` word.
    pub(crate) fn slot_log2(&self) -> u32 {
        (self.timesteps as u32).next_power_of_two().trailing_zeros()
    }

    pub(crate) fn buffer(&self, b: usize) -> Result<Buffer, Error> {
        if b >= self.n_buffers {
            return Err(invalid("buffer index"));
        }
        let mut r = Reader::new(self.blob, self.buffers_at + 12 * b);
        let shape = Shape {
            c: usize::from(r.u16()?),
            h: usize::from(r.u16()?),
            w: usize::from(r.u16()?),
        };
        if r.u16()? != 0 {
            return Err(invalid("reserved field"));
        }
        let offset = r.u32()? as usize;
        let bits = shape
            .count()
            .filter(|&n| n > 0)
            .and_then(|n| n.checked_mul(1 << self.slot_log2()))
            .ok_or(invalid("buffer shape"))?;
        let words = bits.div_ceil(32);
        match offset.checked_add(words) {
            Some(end) if end <= self.buf_words => Ok(Buffer {
                shape,
                offset,
                words,
            }),
            _ => Err(invalid("buffer outside scratch")),
        }
    }

    /// Calls `f` on each operation in order; stops at the first error.
    pub(crate) fn for_each_op(
        &self,
        mut f: impl FnMut(u16, Op<'a>) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        let mut r = Reader::new(self.blob, self.ops_at);
        for i in 0..self.n_ops {
            let idx = i as u16;
            let op = read_op(&mut r, idx)?;
            f(idx, op)?;
        }
        Ok(r.pos())
    }

    fn source_shape(&self, source: u16, valid: u64, idx: u16) -> Result<Shape, Error> {
        if source == SOURCE_INPUT {
            return Ok(self.input);
        }
        let b = usize::from(source);
        let buf = self.buffer(b).map_err(|_| Error::Invalid {
            what: "source buffer index",
            op: idx,
        })?;
        if valid & (1u64 << b) == 0 {
            return Err(Error::Invalid {
                what: "source buffer read before written (or overwritten)",
                op: idx,
            });
        }
        Ok(buf.shape)
    }

    fn check_term(&self, t: &Term<'_>, out: Shape, valid: u64, idx: u16) -> Result<(), Error> {
        let bad = |what| Error::Invalid { what, op: idx };
        let src = self.source_shape(t.source, valid, idx)?;
        match t.kind {
            TermKind::Identity(_) => {
                if src != out {
                    return Err(bad("identity term shape"));
                }
            }
            TermKind::Conv(c) => {
                let pooled = match c.pool {
                    None => src,
                    Some(p) => Shape {
                        c: src.c,
                        h: window_out(src.h, p.kh, p.sh, 0).ok_or(bad("pool window"))?,
                        w: window_out(src.w, p.kw, p.sw, 0).ok_or(bad("pool window"))?,
                    },
                };
                if c.cin != pooled.c {
                    return Err(bad("term input channels"));
                }
                let oh = window_out(pooled.h, c.kh, c.stride, c.pad).ok_or(bad("conv window"))?;
                let ow = window_out(pooled.w, c.kw, c.stride, c.pad).ok_or(bad("conv window"))?;
                if (c.cout, oh, ow) != (out.c, out.h, out.w) {
                    return Err(bad("term output shape"));
                }
            }
        }
        Ok(())
    }

    /// The workspace the event-driven operations need: `(words per accumulator, int8
    /// accumulator needed)`; the largest `H·W·T` among them.
    fn workspace(&self) -> Result<(usize, bool), Error> {
        let (mut words, mut int) = (0usize, false);
        self.for_each_op(|idx, op| {
            if let Op::Neuron { shape, terms, .. } | Op::Readout { shape, terms, .. } = &op {
                if let Some(i) = scatter_kind(terms) {
                    let w = shape
                        .h
                        .checked_mul(shape.w)
                        .and_then(|n| n.checked_mul(self.timesteps))
                        .ok_or(Error::Invalid {
                            what: "workspace size",
                            op: idx,
                        })?;
                    words = words.max(w);
                    int |= i;
                }
            }
            Ok(())
        })?;
        Ok((words, int))
    }

    /// The cross-record checks; returns the offset after the last operation.
    fn validate_ops(&self) -> Result<usize, Error> {
        // Bit b set: buffer b holds the spikes its producer wrote (not clobbered since).
        let mut valid = 0u64;
        let mut readout_seen = false;
        let last = self.n_ops - 1;
        self.for_each_op(|idx, op| {
            let bad = |what| Error::Invalid { what, op: idx };
            let (out, reads) = match &op {
                Op::Neuron {
                    out, shape, terms, ..
                } => {
                    let buf = self
                        .buffer(usize::from(*out))
                        .map_err(|_| bad("output buffer"))?;
                    if buf.shape != *shape {
                        return Err(bad("output buffer shape"));
                    }
                    for t in terms {
                        self.check_term(t, *shape, valid, idx)?;
                    }
                    let mut reads = heapless::Vec::<u16, { crate::blob::MAX_TERMS }>::new();
                    for t in terms {
                        reads.push(t.source).map_err(|_| bad("too many terms"))?;
                    }
                    (Some(*out), reads)
                }
                Op::MaxPool { src, out, geom } => {
                    let s = self.source_shape(*src, valid, idx)?;
                    if *src == SOURCE_INPUT {
                        return Err(bad("max-pool of the analog input"));
                    }
                    let [kh, kw, sh, sw, ph, pw] = *geom;
                    let want = Shape {
                        c: s.c,
                        h: window_out(s.h, kh, sh, ph).ok_or(bad("pool window"))?,
                        w: window_out(s.w, kw, sw, pw).ok_or(bad("pool window"))?,
                    };
                    let buf = self
                        .buffer(usize::from(*out))
                        .map_err(|_| bad("output buffer"))?;
                    if buf.shape != want {
                        return Err(bad("output buffer shape"));
                    }
                    let mut reads = heapless::Vec::<u16, { crate::blob::MAX_TERMS }>::new();
                    let _ = reads.push(*src);
                    (Some(*out), reads)
                }
                Op::Readout { shape, terms, .. } => {
                    if idx as usize != last {
                        return Err(bad("readout is not the last operation"));
                    }
                    if (shape.c, shape.h, shape.w) != (self.classes, 1, 1) {
                        return Err(bad("readout shape"));
                    }
                    for t in terms {
                        self.check_term(t, *shape, valid, idx)?;
                    }
                    readout_seen = true;
                    (None, heapless::Vec::new())
                }
            };
            if let Some(out) = out {
                let o = self.buffer(usize::from(out))?;
                let (o0, o1) = (o.offset, o.offset + o.words);
                for &s in reads.iter().filter(|&&s| s != SOURCE_INPUT) {
                    let b = self.buffer(usize::from(s))?;
                    if b.offset < o1 && o0 < b.offset + b.words {
                        return Err(bad("output buffer overlaps a source"));
                    }
                }
                for b in 0..self.n_buffers {
                    let other = self.buffer(b)?;
                    if other.offset < o1 && o0 < other.offset + other.words {
                        valid &= !(1u64 << b);
                    }
                }
                valid |= 1u64 << out;
            }
            Ok(())
        })
        .and_then(|end| {
            if readout_seen {
                Ok(end)
            } else {
                Err(invalid("no readout operation"))
            }
        })
    }
}

/// Whether an operation accumulates event by event (it has a convolution term on a spike
/// buffer without an average pool): `Some(needs an i32 accumulator)`, else `None`.
pub(crate) fn scatter_kind(terms: &[Term<'_>]) -> Option<bool> {
    let mut found = None;
    for t in terms {
        if let TermKind::Conv(c) = &t.kind {
            if t.source != SOURCE_INPUT && c.pool.is_none() {
                let int = matches!(c.weights, crate::ops::Weights::I8 { .. });
                found = Some(found.unwrap_or(false) | int);
            }
        }
    }
    found
}
