//! [`LocalGroup`]: ranks as threads of one process, with the exact arithmetic of the MPI
//! implementation (rank-order f64 sums), so data-parallel training can be tested without MPI.

use super::{sum_rank_order, Collective};
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    size: usize,
    barrier: Barrier,
    /// One deposit slot per rank, widened to f64 (exact for f32 inputs).
    slots: Mutex<Vec<Vec<f64>>>,
}

/// One rank of an in-process group; move each into its own thread.
///
/// Every rank must make the same sequence of calls (the [`Collective`] contract); a rank that
/// stops calling (e.g. its thread panicked) leaves the others waiting forever, so tests should
/// join with the panic propagated (`std::thread::scope` does).
///
/// ```
/// use mpsnn::dist::{local::LocalGroup, Collective};
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let handles: Vec<_> = LocalGroup::new(3)
///         .into_iter()
///         .map(|g| s.spawn(move || {
///             let mut buf = vec![g.rank() as f32, 1.0];
///             g.allreduce_sum_f32(&mut buf);
///             buf
///         }))
///         .collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert!(sums.iter().all(|b| b == &[3.0, 3.0]));
/// ```
pub struct LocalGroup {
    shared: Arc<Shared>,
    rank: usize,
}

impl LocalGroup {
    /// The `size` ranks of a new group, in rank order.
    ///
    /// # Panics
    /// If `size == 0`.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        assert!(size > 0, "a group needs at least one rank");
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| LocalGroup {
                shared: Arc::clone(&shared),
                rank,
            })
            .collect()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f64>>> {
        // A poisoned lock means another rank panicked mid-deposit; its panic is the error.
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deposits `values`, waits for every rank, and returns all deposits in rank order
    /// (concatenated); a second barrier keeps slots intact until every rank has read them.
    fn exchange(&self, values: Vec<f64>) -> Vec<f64> {
        self.slots()[self.rank] = values;
        self.shared.barrier.wait();
        let all: Vec<f64> = self.slots().concat();
        self.shared.barrier.wait();
        all
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn allreduce_sum_f64(&self, buf: &mut [f64]) {
        let all = self.exchange(buf.to_vec());
        sum_rank_order(&all, self.shared.size, buf);
    }

    fn allreduce_sum_f32(&self, buf: &mut [f32]) {
        let all = self.exchange(buf.iter().map(|&v| v as f64).collect());
        let mut sums = vec![0f64; buf.len()];
        sum_rank_order(&all, self.shared.size, &mut sums);
        for (b, s) in buf.iter_mut().zip(sums) {
            *b = s as f32;
        }
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
        let mine = if self.rank == root {
            buf.iter().map(|&v| v as f64).collect()
        } else {
            Vec::new()
        };
        let all = self.exchange(mine);
        // Only the root deposited anything, so `all` is exactly the root's buffer.
        for (b, &v) in buf.iter_mut().zip(&all) {
            *b = v as f32;
        }
    }

    fn barrier(&self) {
        self.shared.barrier.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<T: Send>(n: usize, f: impl Fn(LocalGroup) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let f = &f;
            let hs: Vec<_> = LocalGroup::new(n)
                .into_iter()
                .map(|g| s.spawn(move || f(g)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn sums_broadcasts_and_repeats_in_rank_order() {
        let out = on_ranks(3, |g| {
            let r = g.rank() as f64;
            let mut a = vec![r, 10.0 * r];
            g.allreduce_sum_f64(&mut a);
            let mut b = vec![-1.0f32; 2];
            if g.rank() == 2 {
                b = vec![7.0, 8.0];
            }
            g.broadcast_f32(&mut b, 2);
            g.barrier();
            // Back-to-back calls must not read a previous call's deposits.
            let mut c = [g.rank() as f32 + 0.5];
            g.allreduce_sum_f32(&mut c);
            (a, b, c[0])
        });
        for (a, b, c) in out {
            assert_eq!(a, [3.0, 30.0]);
            assert_eq!(b, [7.0, 8.0]);
            assert_eq!(c, 4.5);
        }
    }
}
