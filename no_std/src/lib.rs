//! # mpsnn-micro
//!
//! A `#![no_std]`, allocation-free inference runtime for spiking networks exported by `mpsnn`
//! (`mpsnn export`), for Cortex-M class microcontrollers and for the host (`mpsnn infer`).
//!
//! - [`Model::parse`] validates a blob (format: `docs/blob-format.md`) in place, e.g. in
//!   flash: magic, version, CRC32, every length, offset and shape. A malformed blob is an
//!   [`Error`], never a panic.
//! - [`Model::run`] classifies one sample into caller-provided scratch
//!   ([`Model::scratch_words`] `u32` words) and returns the argmax of the class scores.
//! - Spikes are binary: the exporter folded BatchNorm and each LIF layer's threshold `θ` into
//!   the consumers, so spike inputs cost additions only. Every neuron starts at its layer's
//!   MP-Init potential `μ`.
//!
//! ```
//! # fn demo(blob: &[u8], image: &[u8]) -> Result<usize, mpsnn_micro::Error> {
//! use mpsnn_micro::{Input, Model};
//! let model = Model::parse(blob)?;
//! let mut scratch = [0u32; 4096];
//! let mut scores = [0.0f32; 10];
//! model.run(Input::U8(image), &mut scratch, &mut scores)
//! # }
//! ```
//!
//! Portability: `core` only, no `unsafe`, no allocator; f32 arithmetic (the Cortex-M4F has an
//! FPU). MSRV: the workspace's `rust-version`.

#![no_std]
#![deny(missing_docs, unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod blob;
mod crc;
pub mod error;
pub mod lif;
pub mod model;
pub mod ops;
mod run;

pub use crc::crc32;
pub use error::Error;
pub use model::{Encoding, Model};
pub use run::Input;
