//! The SIMD tensor core: hot loops on `&[f32]` slices.
//!
//! Kernels know nothing of layers: they take slices and sizes, write into caller-provided
//! outputs, and never allocate in their inner loops. Vector code uses `wide` with scalar tails;
//! GEMM goes through `matrixmultiply`; parallelism is rayon over independent output blocks, with
//! reductions in a fixed order so results do not depend on scheduling.

pub mod bn;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod lif;
pub mod narrow;
pub mod pool;
