//! Inference: layer by layer, time innermost.
//!
//! Each LIF operation computes, for each output neuron, its `T` input currents from its terms
//! ([`crate::currents`]), runs the `T` LIF steps ([`crate::lif::run`]) and stores the `T` spike
//! bits. No membrane array exists: the potential lives in a register for the `T` steps of one
//! neuron. Spike maps are bit-packed, one slot of `2^⌈log2 T⌉` bits per neuron (neuron-major),
//! so one word load yields a neuron's whole spike train and a train never straddles two words;
//! the cost over the tightest packing is at most 2× (none for T = 1, 2, 4, 8, 16, 32).

use crate::blob::{MAX_INPUT_CHANNELS, MAX_TERMS, SOURCE_INPUT};
use crate::currents::{neuron, Workspace};
use crate::error::Error;
use crate::model::{Buffer, Model};
use crate::ops::{Op, Shape, Term};

/// One sample's input, normalized or raw.
#[derive(Clone, Copy, Debug)]
pub enum Input<'x> {
    /// Already-normalized values (what `mpsnn eval` feeds its network), `[C, H, W]` or
    /// `[T, C, H, W]`.
    F32(&'x [f32]),
    /// Raw values (e.g. `u8` pixels), normalized on the fly as
    /// `(x / div − mean[c]) / std[c]` with the constants stored in the blob.
    U8(&'x [u8]),
}

/// The analog input with its normalization constants at hand.
pub(crate) struct Analog<'x> {
    pub(crate) input: Input<'x>,
    pub(crate) shape: Shape,
    pub(crate) div: f32,
    pub(crate) norm: [(f32, f32); MAX_INPUT_CHANNELS],
}

impl Analog<'_> {
    #[inline(always)]
    pub(crate) fn get(&self, p: usize, c: usize, y: usize, x: usize) -> f32 {
        let s = self.shape;
        let i = ((p * s.c + c) * s.h + y) * s.w + x;
        match self.input {
            Input::F32(v) => v.get(i).copied().unwrap_or(0.0),
            Input::U8(v) => {
                let (mean, std) = self.norm.get(c).copied().unwrap_or((0.0, 1.0));
                (f32::from(v.get(i).copied().unwrap_or(0)) / self.div - mean) / std
            }
        }
    }
}

/// A bit-packed spike map (read side).
#[derive(Clone, Copy)]
pub(crate) struct Spikes<'s> {
    pub(crate) words: &'s [u32],
    pub(crate) shape: Shape,
    pub(crate) log2: u32,
    pub(crate) mask: u32,
}

impl Spikes<'_> {
    #[inline(always)]
    pub(crate) fn bits(&self, c: usize, y: usize, x: usize) -> u32 {
        self.bits_at((c * self.shape.h + y) * self.shape.w + x)
    }

    /// The spike train of neuron `n` (channel-major index).
    #[inline(always)]
    pub(crate) fn bits_at(&self, n: usize) -> u32 {
        let bit = n << self.log2;
        let word = self.words.get(bit >> 5).copied().unwrap_or(0);
        (word >> (bit & 31)) & self.mask
    }
}

#[inline(always)]
fn store(words: &mut [u32], n: usize, log2: u32, mask: u32, bits: u32) {
    let bit = n << log2;
    let off = bit & 31;
    if let Some(w) = words.get_mut(bit >> 5) {
        *w = (*w & !(mask << off)) | ((bits & mask) << off);
    }
}

/// What every term needs besides its source: the analog input, `T`, and its plane count.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'x> {
    pub(crate) x: &'x Analog<'x>,
    pub(crate) t: usize,
    pub(crate) planes: usize,
}

/// A term's source, resolved against the scratch arena.
#[derive(Clone, Copy)]
pub(crate) enum Src<'s> {
    Input,
    Spikes(Spikes<'s>),
}

fn spikes<'s>(model: &Model<'_>, buf: &Buffer, words: &'s [u32]) -> Spikes<'s> {
    let log2 = model.slot_log2();
    Spikes {
        words,
        shape: buf.shape,
        log2,
        mask: if log2 == 5 {
            u32::MAX
        } else {
            (1u32 << (1u32 << log2)) - 1
        },
    }
}

/// Resolves a source buffer that lies entirely before or after the output region.
fn resolve<'s>(
    model: &Model<'_>,
    source: u16,
    before: &'s [u32],
    after: &'s [u32],
    after_at: usize,
) -> Result<Src<'s>, Error> {
    if source == SOURCE_INPUT {
        return Ok(Src::Input);
    }
    let b = model.buffer(usize::from(source))?;
    let end = b.offset + b.words;
    let words = if end <= before.len() {
        before.get(b.offset..end)
    } else if b.offset >= after_at {
        after.get(b.offset - after_at..end - after_at)
    } else {
        None
    };
    let words = words.ok_or(Error::Invalid {
        what: "output buffer overlaps a source",
        op: u16::MAX,
    })?;
    Ok(Src::Spikes(spikes(model, &b, words)))
}

impl Model<'_> {
    /// Runs one sample: writes the class scores (logits averaged over `T`) into
    /// `scores[..classes]` and returns the predicted class (the first maximal score).
    ///
    /// `scratch` must have at least [`Model::scratch_words`] words; its contents on entry do not
    /// matter. `input` must have [`Model::input_len`] elements.
    pub fn run(
        &self,
        input: Input<'_>,
        scratch: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize, Error> {
        let got = match input {
            Input::F32(v) => v.len(),
            Input::U8(v) => v.len(),
        };
        if got != self.input_len() {
            return Err(Error::InputLength {
                expected: self.input_len(),
                got,
            });
        }
        if scratch.len() < self.scratch_words() {
            return Err(Error::Scratch {
                needed: self.scratch_words(),
                got: scratch.len(),
            });
        }
        let given = scores.len();
        let scores = scores
            .get_mut(..self.classes())
            .ok_or(Error::ScoresLength {
                expected: self.classes(),
                got: given,
            })?;
        let [c, h, w] = self.input_shape();
        let mut norm = [(0.0, 1.0); MAX_INPUT_CHANNELS];
        for (k, n) in norm.iter_mut().enumerate().take(c) {
            *n = self.norm(k);
        }
        let x = Analog {
            input,
            shape: Shape { c, h, w },
            div: self.u8_div(),
            norm,
        };
        let t = self.timesteps();
        let ctx = Ctx {
            x: &x,
            t,
            planes: self.input_planes(),
        };
        let (buf_words, ws_words, ws_int) = self.scratch_layout();
        let short = Error::Scratch {
            needed: self.scratch_words(),
            got: scratch.len(),
        };
        let (scratch, ws) = scratch.split_at_mut_checked(buf_words).ok_or(short)?;
        let (cur, rest) = ws.split_at_mut_checked(ws_words).ok_or(short)?;
        let acc = if ws_int {
            rest.get_mut(..ws_words).ok_or(short)?
        } else {
            &mut []
        };
        let mut ws = Workspace { cur, acc };
        self.for_each_op(|_, op| {
            match op {
                Op::Neuron {
                    out,
                    shape,
                    lif,
                    bias,
                    terms,
                } => {
                    let ob = self.buffer(usize::from(out))?;
                    let (before, rest) = scratch
                        .split_at_mut_checked(ob.offset)
                        .ok_or(Error::Truncated { at: ob.offset })?;
                    let (dst, after) = rest
                        .split_at_mut_checked(ob.words)
                        .ok_or(Error::Truncated { at: ob.offset })?;
                    let srcs = resolve_all(self, &terms, before, after, ob.offset + ob.words)?;
                    let o = spikes(self, &ob, &[]);
                    neuron(&terms, &srcs, &ctx, shape, bias, &mut ws, |n, cur| {
                        store(
                            dst,
                            n,
                            o.log2,
                            o.mask,
                            crate::lif::run(&lif, cur.get(..t).unwrap_or(&[])),
                        );
                    });
                }
                Op::MaxPool { src, out, geom } => {
                    let ob = self.buffer(usize::from(out))?;
                    let (before, rest) = scratch
                        .split_at_mut_checked(ob.offset)
                        .ok_or(Error::Truncated { at: ob.offset })?;
                    let (dst, after) = rest
                        .split_at_mut_checked(ob.words)
                        .ok_or(Error::Truncated { at: ob.offset })?;
                    if let Src::Spikes(map) =
                        resolve(self, src, before, after, ob.offset + ob.words)?
                    {
                        let o = spikes(self, &ob, &[]);
                        maxpool(&map, ob.shape, geom, |n, bits| {
                            store(dst, n, o.log2, o.mask, bits)
                        });
                    }
                }
                Op::Readout { shape, bias, terms } => {
                    let srcs = resolve_all(self, &terms, &*scratch, &[], usize::MAX)?;
                    neuron(&terms, &srcs, &ctx, shape, bias, &mut ws, |n, cur| {
                        if let Some(s) = scores.get_mut(n) {
                            *s = cur.iter().take(t).sum::<f32>() / t as f32;
                        }
                    });
                }
            }
            Ok(())
        })?;
        let mut best = 0;
        for (k, &s) in scores.iter().enumerate() {
            if s > scores.get(best).copied().unwrap_or(f32::NAN) {
                best = k;
            }
        }
        Ok(best)
    }
}

fn resolve_all<'s>(
    model: &Model<'_>,
    terms: &[Term<'_>],
    before: &'s [u32],
    after: &'s [u32],
    after_at: usize,
) -> Result<heapless::Vec<Src<'s>, MAX_TERMS>, Error> {
    let mut srcs = heapless::Vec::new();
    for term in terms {
        let s = resolve(model, term.source, before, after, after_at)?;
        srcs.push(s).map_err(|_| Error::Invalid {
            what: "too many terms",
            op: u16::MAX,
        })?;
    }
    Ok(srcs)
}

/// OR over each window (max-pool of binary spikes; exact because `θ > 0`).
fn maxpool(map: &Spikes<'_>, out: Shape, geom: [usize; 6], mut emit: impl FnMut(usize, u32)) {
    let [kh, kw, sh, sw, ph, pw] = geom;
    let mut n = 0;
    for c in 0..out.c {
        for oy in 0..out.h {
            for ox in 0..out.w {
                let mut bits = 0;
                for ky in 0..kh {
                    let y = (oy * sh + ky).wrapping_sub(ph);
                    if y >= map.shape.h {
                        continue;
                    }
                    for kx in 0..kw {
                        let xx = (ox * sw + kx).wrapping_sub(pw);
                        if xx < map.shape.w {
                            bits |= map.bits(c, y, xx);
                        }
                    }
                }
                emit(n, bits);
                n += 1;
            }
        }
    }
}
