//! The blob's byte layout (see `docs/blob-format.md`, version [`VERSION`]) and a bounds-checked
//! little-endian cursor over it.
//!
//! Every read goes through [`Reader`], which returns [`Error::Truncated`] instead of reading past
//! the end, so a hostile blob can only produce errors.

use crate::error::Error;

/// The four magic bytes at offset 0.
pub const MAGIC: [u8; 4] = *b"MPSN";
/// The format version this runtime reads and `mpsnn export` writes.
pub const VERSION: u16 = 1;
/// Bytes of the fixed header (magic, version, flags, length, CRC); the CRC covers the rest.
pub const HEADER_LEN: usize = 16;
/// Largest number of timesteps (one `u32` word holds a neuron's spike train).
pub const MAX_T: usize = 32;
/// Largest number of synaptic terms summed into one operation's currents.
pub const MAX_TERMS: usize = 4;
/// Largest number of spike buffers (the runtime tracks their validity in a `u64` mask).
pub const MAX_BUFFERS: usize = 64;
/// Largest number of input channels (their normalization constants are cached per run).
pub const MAX_INPUT_CHANNELS: usize = 16;
/// Source index that names the model input instead of a spike buffer.
pub const SOURCE_INPUT: u16 = 0xFFFF;

/// Operation kinds.
pub mod op {
    /// LIF layer: currents from terms, `T` LIF steps per neuron, spikes into a buffer.
    pub const NEURON: u8 = 1;
    /// Max-pool over spikes (an OR over each window).
    pub const MAXPOOL: u8 = 2;
    /// Class scores: currents from terms, averaged over `T`; always the last op.
    pub const READOUT: u8 = 3;
}

/// Term (synapse) kinds.
pub mod term {
    /// Convolution (linear layers are convolutions whose kernel covers the input), f32 weights.
    pub const CONV_F32: u8 = 1;
    /// Convolution with int8 weights and one f32 scale per output channel.
    pub const CONV_I8: u8 = 2;
    /// Element-wise identity with one f32 scale per channel (residual shortcuts).
    pub const IDENTITY: u8 = 3;
}

/// A little-endian cursor over a byte slice; every read is bounds-checked.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at offset `pos` of `buf`.
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// The current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes, advancing past them.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let at = self.pos;
        let end = at.checked_add(n).ok_or(Error::Truncated { at })?;
        let s = self.buf.get(at..end).ok_or(Error::Truncated { at })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let at = self.pos;
        self.bytes(N)?
            .try_into()
            .map_err(|_| Error::Truncated { at })
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Error> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, Error> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `f32`.
    pub fn f32(&mut self) -> Result<f32, Error> {
        self.array().map(f32::from_le_bytes)
    }

    /// A finite little-endian `f32`; NaN or ±∞ is [`Error::Invalid`] naming `what`.
    pub fn finite(&mut self, what: &'static str, op: u16) -> Result<f32, Error> {
        let v = self.f32()?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Error::Invalid { what, op })
        }
    }

    /// `n` little-endian `f32`s as raw bytes, each checked finite.
    pub fn finite_array(
        &mut self,
        n: usize,
        what: &'static str,
        op: u16,
    ) -> Result<F32s<'a>, Error> {
        let len = n.checked_mul(4).ok_or(Error::Invalid { what, op })?;
        let bytes = self.bytes(len)?;
        let arr = F32s(bytes);
        if arr.iter().all(f32::is_finite) {
            Ok(arr)
        } else {
            Err(Error::Invalid { what, op })
        }
    }

    /// Skips zero bytes up to the next multiple of 4; non-zero padding is [`Error::Invalid`].
    pub fn align4(&mut self, op: u16) -> Result<(), Error> {
        let pad = (4 - self.pos % 4) % 4;
        if self.bytes(pad)?.iter().any(|&b| b != 0) {
            return Err(Error::Invalid {
                what: "padding",
                op,
            });
        }
        Ok(())
    }
}

/// A zero-copy view of little-endian `f32`s stored in the blob (any alignment).
#[derive(Clone, Copy, Debug)]
pub struct F32s<'a>(pub &'a [u8]);

impl<'a> F32s<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.len() < 4
    }

    /// Value `i`, or `0.0` past the end (validation guarantees callers stay in range).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        let at = i.wrapping_mul(4);
        match self.0.get(at..at.wrapping_add(4)) {
            Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
            _ => 0.0,
        }
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + 'a {
        self.0.chunks_exact(4).map(|c| match *c {
            [a, b, c, d] => f32::from_le_bytes([a, b, c, d]),
            _ => 0.0,
        })
    }

    /// Values `start .. start + n` as a sub-view (empty if out of range).
    pub fn slice(&self, start: usize, n: usize) -> F32s<'a> {
        let lo = start.saturating_mul(4);
        let hi = lo.saturating_add(n.saturating_mul(4));
        F32s(self.0.get(lo..hi).unwrap_or(&[]))
    }
}
