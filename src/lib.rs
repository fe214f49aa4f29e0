//! # mpsnn
//!
//! Spiking neural networks (SNNs) of leaky integrate-and-fire neurons, trained fast on multicore
//! CPUs with surrogate-gradient BPTT and deployed to microcontrollers — a pure-Rust
//! implementation of **MP-Init** (membrane-potential initialization) and **TrSG**
//! (threshold-robust surrogate gradient) from Kook et al., "Stabilizing Direct Training of
//! Spiking Neural Networks" (WACV 2026).
//!
//! Layering (each layer knows only the ones above it in this list):
//! - [`kernels`]: the SIMD tensor core on `&[f32]` slices (GEMM, conv, pooling, BN, LIF loops).
//! - [`dist`]: collective communication for data-parallel training (single process, threads,
//!   or MPI with the `mpi` feature).
//! - [`neuron`]: LIF dynamics, the surrogate family, MP-Init.
//! - [`nn`]: layers, the [`nn::Layer`] trait, containers, models as data ([`nn::ModelSpec`]).
//! - [`models`]: built-in model specs.
//! - [`data`]: datasets, encoding, augmentation, batching.
//! - [`train`]: losses, optimizers, schedules, the trainer, checkpoints.
//! - [`export`]: folding and the `mpsnn-micro` blob writer.
//! - [`analysis`]: ablation grids, mean ± std over seeds, tables; [`plot`]: figures from run files.

#![deny(missing_docs)]

pub mod analysis;
pub mod buffer_pool;
pub mod data;
pub mod dist;
pub mod error;
pub mod export;
pub mod kernels;
pub mod models;
pub mod neuron;
pub mod nn;
pub mod plot;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use tensor::Tensor;
