//! Collective communication for data-parallel training, behind one small trait.
//!
//! The core (layers, trainer) never sees MPI. It talks to a [`Collective`]: a group of `size`
//! processes ("ranks") that sum buffers, broadcast and synchronize. Three implementations:
//! - [`Solo`]: a single process; every operation is a no-op (the default everywhere).
//! - [`local::LocalGroup`]: ranks as threads of one process, for tests and examples — the same
//!   arithmetic as MPI, without MPI.
//! - `mpi::MpiWorld` (cargo feature `mpi`): `MPI_COMM_WORLD` through the `mpi` crate (rsmpi).
//!
//! **Determinism.** Every sum is taken over ranks in rank order `0, 1, …, N−1`, accumulated in
//! f64 and rounded once, and every rank receives the *same bits*. MPI's own `MPI_Allreduce`
//! leaves the floating-point reduction order to the implementation (it may depend on message
//! sizes, the algorithm chosen and the process layout), so [`Collective`] does not use it for
//! floats: the MPI version exchanges chunks with `MPI_Alltoallv`, lets the owner of each chunk
//! sum it in rank order ([`sum_rank_order`]), and shares the sums with `MPI_Allgatherv`. That
//! moves `2·(N−1)/N` times the buffer per rank, the same volume as a ring allreduce. Small
//! buffers (latency-bound) are gathered to rank 0, summed there in the same order, and
//! broadcast.
//!
//! **How layers reach it.** The two layers that need cross-rank reductions hold an optional
//! `Arc<dyn Collective>` set by the data-parallel driver ([`crate::train::data_parallel`]):
//! [`crate::nn::batchnorm::BatchNorm2d::set_sync`] (synchronized batch statistics) and
//! [`crate::nn::lif::Lif::set_sync`] (the MP-Init batch statistic pooled over ranks). A field per
//! layer, rather than a process-wide global or a field of `ForwardCtx`, keeps the `Layer` trait
//! and `ForwardCtx` unchanged, lets two networks in one process belong to different groups (the
//! thread-rank tests rely on it), and makes "not distributed" the plain default (`None`).

use std::sync::Arc;

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod shard;
pub mod sync_bn;

/// A group of cooperating processes (ranks) that reduce and share buffers.
///
/// Contract for every method: all ranks of the group call it, in the same order, with buffers
/// of the same length; it returns once the result is available on this rank. Sums are
/// elementwise over ranks in rank order, accumulated in f64 and rounded once, so every rank
/// receives bit-identical values (see the module docs). A mismatched call sequence is a
/// programming error that hangs or aborts the group (MPI's default error handler aborts the job).
pub trait Collective: Send + Sync {
    /// This process's index in `0..size()`.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn size(&self) -> usize;

    /// `buf ← Σ_r buf_r` over all ranks, in rank order.
    fn allreduce_sum_f64(&self, buf: &mut [f64]);

    /// `buf ← Σ_r buf_r` over all ranks, summed in f64 in rank order and rounded to f32 once.
    /// Moves f32 (4 bytes per element) between ranks.
    fn allreduce_sum_f32(&self, buf: &mut [f32]);

    /// `buf ← buf` of rank `root` on every rank.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize);

    /// Returns once every rank has called it.
    fn barrier(&self);

    /// True on rank 0, the rank that writes files and prints progress.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// The single-process group: rank 0 of 1. Sums and broadcasts leave buffers unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allreduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn allreduce_sum_f32(&self, _buf: &mut [f32]) {}
    fn broadcast_f32(&self, _buf: &mut [f32], _root: usize) {}
    fn barrier(&self) {}
}

/// A shared handle to a collective, as layers and the trainer hold it.
pub type SharedCollective = Arc<dyn Collective>;

/// A value that can be summed in f64 in rank order: f32 and f64.
pub trait Summable: Copy {
    /// Widens to f64.
    fn to_f64(self) -> f64;
    /// Rounds from f64.
    fn from_f64(v: f64) -> Self;
}

impl Summable for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Summable for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// `out[i] = Σ_r parts[r·len + i]` for `r = 0..ranks` in that order, in f64, rounded once
/// (`len = out.len()`): the one reduction rule every [`Collective`] uses.
///
/// # Panics
/// If `parts.len() != ranks · out.len()`.
///
/// ```
/// use mpsnn::dist::sum_rank_order;
/// let parts = [1e8f32, 1.0, -1e8, 2.0]; // rank 0: [1e8, 1], rank 1: [-1e8, 2]
/// let mut out = [0f32; 2];
/// sum_rank_order(&parts, 2, &mut out);
/// assert_eq!(out, [0.0, 3.0]);
/// ```
pub fn sum_rank_order<T: Summable>(parts: &[T], ranks: usize, out: &mut [T]) {
    let len = out.len();
    assert_eq!(parts.len(), ranks * len, "sum_rank_order: lengths");
    for (i, o) in out.iter_mut().enumerate() {
        let mut acc = 0f64;
        for r in 0..ranks {
            acc += parts[r * len + i].to_f64();
        }
        *o = T::from_f64(acc);
    }
}

/// The chunk `[start, end)` of a buffer of `len` elements that rank `rank` of `ranks` reduces
/// (contiguous, sizes differ by at most one).
pub fn chunk(len: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    (len * rank / ranks)..(len * (rank + 1) / ranks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_the_buffer() {
        for len in [0, 1, 5, 7, 64] {
            for ranks in 1..6 {
                let mut next = 0;
                for r in 0..ranks {
                    let c = chunk(len, ranks, r);
                    assert_eq!(c.start, next);
                    assert!(c.len() <= len.div_ceil(ranks));
                    next = c.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn rank_order_sum_is_exact_in_f64_then_rounded_once() {
        // In f32, (1 + 2^-24) + 2^-24 would round twice; in f64 the two halves survive.
        let e = f32::EPSILON / 2.0;
        let parts = [1.0f32, e, e];
        let mut out = [0f32];
        sum_rank_order(&parts, 3, &mut out);
        assert_eq!(out[0], 1.0 + f32::EPSILON);
        let mut solo = [1.5f32, -2.0];
        Solo.allreduce_sum_f32(&mut solo);
        assert_eq!(solo, [1.5, -2.0]);
        assert!(Solo.is_root() && Solo.size() == 1);
    }
}
