//! [`MpiWorld`]: the [`Collective`] over `MPI_COMM_WORLD` (cargo feature `mpi`, rsmpi over the
//! system MPI; tested with Open MPI 4.1).
//!
//! Sums use `MPI_Alltoallv` + a rank-order f64 sum + `MPI_Allgatherv` (see [`super`] for why
//! not `MPI_Allreduce`): bandwidth-optimal, but `2·(N−1)` message latencies. Buffers of at most
//! [`SMALL`] elements (the per-layer hooks: MP-Init μ, BN statistics) go through rank 0 instead —
//! `MPI_Gather`, the same rank-order sum, `MPI_Bcast` — whose tree algorithms cost `O(log N)`
//! latencies. Both paths give the same bits: each element is summed over ranks in rank order. Every MPI call is made from the thread that called [`MpiRuntime::init`]
//! (MPI thread level "funneled"): rayon's workers never communicate, and the layers reach the
//! collective only from `forward`/`backward`, which run on the caller's thread.

use super::{chunk, sum_rank_order, Collective, Summable};
use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use std::sync::{Arc, Mutex};

/// Elements per collective call: MPI counts are C `int`s, so longer buffers go in segments.
const SEGMENT: usize = 1 << 28;

/// Buffers up to this many elements are summed at rank 0 and broadcast (latency-bound sizes).
pub const SMALL: usize = 1 << 14;

/// MPI for the life of the process: keep it alive until training is done (dropping it calls
/// `MPI_Finalize`).
pub struct MpiRuntime {
    _universe: Universe,
    world: Arc<MpiWorld>,
}

impl MpiRuntime {
    /// Initializes MPI (thread level "funneled"). `None` if MPI was already initialized, or the
    /// library granted less than "funneled".
    pub fn init() -> Option<MpiRuntime> {
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
        if level < mpi::Threading::Funneled {
            return None;
        }
        let w = universe.world();
        let world = Arc::new(MpiWorld {
            rank: w.rank() as usize,
            size: w.size() as usize,
            scratch_f32: Mutex::default(),
            scratch_f64: Mutex::default(),
        });
        Some(MpiRuntime {
            _universe: universe,
            world,
        })
    }

    /// The world group as a shareable [`Collective`].
    pub fn world(&self) -> Arc<MpiWorld> {
        Arc::clone(&self.world)
    }

    /// Stops every rank of the job with exit code `code` (`MPI_Abort`): what a rank that hit
    /// an error must do, or the others wait for it forever.
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }
}

/// `MPI_COMM_WORLD` as a [`Collective`]. It holds only the rank and size (the communicator
/// handle is rebuilt per call, so the type is `Send + Sync` without any unsafe code).
#[derive(Debug)]
pub struct MpiWorld {
    rank: usize,
    size: usize,
    /// Receive and sum buffers kept across calls: a fresh 50 MB buffer per step (ResNet-19)
    /// would page-fault its way through the kernel every time.
    scratch_f32: Mutex<Scratch<f32>>,
    scratch_f64: Mutex<Scratch<f64>>,
}

/// The chunks received from every rank, and their sums.
#[derive(Debug, Default)]
struct Scratch<T> {
    gathered: Vec<T>,
    sums: Vec<T>,
}

/// MPI counts and displacements of the [`chunk`]s of a `len`-element buffer.
fn layout(len: usize, ranks: usize) -> (Vec<Count>, Vec<Count>) {
    (0..ranks)
        .map(|r| {
            let c = chunk(len, ranks, r);
            (c.len() as Count, c.start as Count)
        })
        .unzip()
}

impl MpiWorld {
    /// One segment: scatter chunk `j` of every rank to rank `j`, sum in rank order there,
    /// gather every chunk's sum back to all ranks.
    fn allreduce_segment<T>(&self, buf: &mut [T], scratch: &mut Scratch<T>)
    where
        T: Summable + Equivalence + Default,
    {
        let n = self.size;
        let world = SimpleCommunicator::world();
        let (counts, displs) = layout(buf.len(), n);
        let own = chunk(buf.len(), n, self.rank).len();
        let Scratch { gathered, sums } = scratch;
        gathered.resize(n * own, T::default());
        sums.resize(own, T::default());
        let recv_counts = vec![own as Count; n];
        let recv_displs: Vec<Count> = (0..n).map(|r| (r * own) as Count).collect();
        world.all_to_all_varcount_into(
            &Partition::new(&*buf, &counts[..], &displs[..]),
            &mut PartitionMut::new(&mut gathered[..], &recv_counts[..], &recv_displs[..]),
        );
        sum_rank_order(gathered, n, sums);
        world.all_gather_varcount_into(
            &sums[..],
            &mut PartitionMut::new(buf, &counts[..], &displs[..]),
        );
    }

    /// Gather to rank 0, sum in rank order there, broadcast.
    fn allreduce_small<T>(&self, buf: &mut [T], scratch: &mut Scratch<T>)
    where
        T: Summable + Equivalence + Default,
    {
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(0);
        if self.rank == 0 {
            scratch.gathered.resize(self.size * buf.len(), T::default());
            root.gather_into_root(&*buf, &mut scratch.gathered[..]);
            sum_rank_order(&scratch.gathered, self.size, buf);
        } else {
            root.gather_into(&*buf);
        }
        root.broadcast_into(buf);
    }

    fn allreduce<T>(&self, buf: &mut [T], scratch: &Mutex<Scratch<T>>)
    where
        T: Summable + Equivalence + Default,
    {
        if self.size == 1 {
            return;
        }
        // Calls come from one thread (see the module docs); the lock only satisfies `Sync`.
        let mut scratch = scratch.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() <= SMALL {
            return self.allreduce_small(buf, &mut scratch);
        }
        for seg in buf.chunks_mut(SEGMENT) {
            self.allreduce_segment(seg, &mut scratch);
        }
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn allreduce_sum_f64(&self, buf: &mut [f64]) {
        self.allreduce(buf, &self.scratch_f64);
    }

    fn allreduce_sum_f32(&self, buf: &mut [f32]) {
        self.allreduce(buf, &self.scratch_f32);
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(root as mpi::Rank);
        for seg in buf.chunks_mut(SEGMENT) {
            root.broadcast_into(seg);
        }
    }

    fn barrier(&self) {
        SimpleCommunicator::world().barrier();
    }
}
