//! [`MpiWorld`]: the [`Collective`] over `MPI_COMM_WORLD` (cargo feature `mpi`, rsmpi over the
//! system MPI; tested with Open MPI 4.1).
//!
//! Sums use `MPI_Alltoallv` + a rank-order f64 sum + `MPI_Allgatherv` (see [`super`] for why
//! not `MPI_Allreduce`). Every MPI call is made from the thread that called [`MpiRuntime::init`]
//! (MPI thread level "funneled"): rayon's workers never communicate, and the layers reach the
//! collective only from `forward`/`backward`, which run on the caller's thread.

use super::{chunk, sum_rank_order, Collective, Summable};
use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use std::sync::Arc;

/// Elements per collective call: MPI counts are C `int`s, so longer buffers go in segments.
const SEGMENT: usize = 1 << 28;

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
    fn allreduce_segment<T>(&self, buf: &mut [T])
    where
        T: Summable + Equivalence + Default,
    {
        let n = self.size;
        let world = SimpleCommunicator::world();
        let (counts, displs) = layout(buf.len(), n);
        let own = chunk(buf.len(), n, self.rank).len();
        let mut gathered = vec![T::default(); n * own];
        let recv_counts = vec![own as Count; n];
        let recv_displs: Vec<Count> = (0..n).map(|r| (r * own) as Count).collect();
        world.all_to_all_varcount_into(
            &Partition::new(&*buf, &counts[..], &displs[..]),
            &mut PartitionMut::new(&mut gathered[..], &recv_counts[..], &recv_displs[..]),
        );
        let mut sums = vec![T::default(); own];
        sum_rank_order(&gathered, n, &mut sums);
        world.all_gather_varcount_into(
            &sums[..],
            &mut PartitionMut::new(buf, &counts[..], &displs[..]),
        );
    }

    fn allreduce<T>(&self, buf: &mut [T])
    where
        T: Summable + Equivalence + Default,
    {
        if self.size == 1 {
            return;
        }
        for seg in buf.chunks_mut(SEGMENT) {
            self.allreduce_segment(seg);
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
        self.allreduce(buf);
    }

    fn allreduce_sum_f32(&self, buf: &mut [f32]) {
        self.allreduce(buf);
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
