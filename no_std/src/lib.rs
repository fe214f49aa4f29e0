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
//!
//! ## Measured on an emulated Cortex-M4F
//!
//! `scripts/mcu.sh`: the example firmware (`no_std/firmware`, `opt-level = "s"`, LTO) linked
//! against a 256 KiB-flash / 64 KiB-RAM map, run under QEMU `mps2-an386` with `-icount shift=0`
//! on 8 MNIST test images, every prediction equal to the host runtime's. T = 4. Instructions
//! are QEMU instruction counts, not M4 cycles; they grow with spike activity (range over the 8
//! images in brackets). RAM is data + bss (the scratch: bit-packed spike maps plus one output
//! channel's current accumulators, twice for int8) + the measured stack.
//!
//! | model | weights | blob | flash (text+rodata+data) | RAM | instructions / inference |
//! |---|---|---|---|---|---|
//! | `mnist-cnn` (conv 32, conv 64, fc; trained 1 epoch, 98.4 %) | f32 | 201,040 B | 235,372 B | 18,836 + 2,140 = 20,976 B | 54.2 M (42.1–64.8 M) |
//! | same | int8 | 51,960 B | 86,268 B | 21,972 + 2,140 = 24,112 B | 53.1 M (41.6–63.2 M) |
//! | half-width demo network (conv 16, conv 32, fc; CI default) | f32 | 82,256 B | 116,588 B | 10,996 + 2,140 = 13,136 B | 22.2 M |
//! | same | int8 | 21,560 B | 55,868 B | 14,132 + 2,140 = 16,272 B | 21.9 M |
//!
//! Validating the blob (CRC included) once at boot costs about 10 instructions per blob byte
//! (2.1 M for the f32 `mnist-cnn` blob, 0.6 M for int8).

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
mod currents;
pub mod error;
pub mod lif;
pub mod model;
pub mod ops;
mod run;

pub use crc::crc32;
pub use error::Error;
pub use model::{Encoding, Model};
pub use run::Input;
