//! The runtime's error type: every malformed blob and every caller mistake is a value.

use core::fmt;

/// Why a blob was rejected or an inference could not run.
///
/// Parsing ([`crate::Model::parse`]) returns the blob variants; [`crate::Model::run`] returns
/// the caller-contract variants (`Scratch`, `InputLength`, `ScoresLength`). Nothing in this
/// crate panics instead of returning one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The blob ends before a field it needs (`at` is the byte offset of the missing field).
    Truncated {
        /// Byte offset of the field that did not fit.
        at: usize,
    },
    /// The first four bytes are not `MPSN`.
    BadMagic,
    /// The blob's format version is not one this runtime reads.
    UnsupportedVersion {
        /// The version found in the header.
        found: u16,
    },
    /// The CRC32 stored in the header does not match the blob's bytes.
    BadCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the blob.
        computed: u32,
    },
    /// A field holds a value the format forbids (`what` names it, `op` is the operation index
    /// or `u16::MAX` for the header and tables).
    Invalid {
        /// The offending field, e.g. `"term output shape"`.
        what: &'static str,
        /// Index of the operation that holds it (`u16::MAX`: header or buffer table).
        op: u16,
    },
    /// The caller's scratch slice is smaller than [`crate::Model::scratch_words`].
    Scratch {
        /// Words the model needs.
        needed: usize,
        /// Words provided.
        got: usize,
    },
    /// The input has the wrong number of elements ([`crate::Model::input_len`]).
    InputLength {
        /// Elements the model expects.
        expected: usize,
        /// Elements provided.
        got: usize,
    },
    /// The scores slice is shorter than the number of classes.
    ScoresLength {
        /// Classes of the model.
        expected: usize,
        /// Length provided.
        got: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { at } => write!(f, "blob truncated at byte {at}"),
            Error::BadMagic => f.write_str("not an mpsnn-micro blob (bad magic)"),
            Error::UnsupportedVersion { found } => write!(
                f,
                "blob format version {found} is not supported (this runtime reads {})",
                crate::blob::VERSION
            ),
            Error::BadCrc { stored, computed } => write!(
                f,
                "blob CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Error::Invalid { what, op } if op == u16::MAX => write!(f, "invalid blob: {what}"),
            Error::Invalid { what, op } => write!(f, "invalid blob: {what} in op {op}"),
            Error::Scratch { needed, got } => {
                write!(f, "scratch too small: need {needed} words, got {got}")
            }
            Error::InputLength { expected, got } => {
                write!(f, "input has {got} elements, the model expects {expected}")
            }
            Error::ScoresLength { expected, got } => {
                write!(
                    f,
                    "scores slice has {got} entries, the model has {expected} classes"
                )
            }
        }
    }
}

impl core::error::Error for Error {}
