//! Which samples each rank visits.
//!
//! Training: every rank computes the same global order (the seeded
//! [`crate::data::epoch_permutation`]) and cuts it into global batches of `ranks · batch`
//! samples — exactly the batches a single process with batch `ranks · batch` would take. Rank
//! `r` takes the `r`-th contiguous slice of each global batch, so the concatenation of the
//! ranks' local batches in rank order *is* the global batch. The last, partial global batch is
//! split as evenly as possible (local sizes differ by at most one; the trainer weights each
//! rank's loss by its share, so the step still equals the single-process step). Only if that
//! last batch holds fewer samples than there are ranks is it skipped, since every rank must
//! take every step: then up to `ranks − 1` samples sit out that epoch.
//!
//! Evaluation: rank `r` takes the `r`-th contiguous block of the test set; counts are summed.

use super::chunk;
use std::ops::Range;

/// Steps per epoch for `n` samples, `batch` samples per rank and `ranks` ranks.
///
/// ```
/// use mpsnn::dist::shard::steps_per_epoch;
/// assert_eq!(steps_per_epoch(10, 2, 2), 3); // batches of 4, 4, and a final 2 split 1 + 1
/// assert_eq!(steps_per_epoch(9, 2, 2), 2);  // the final 1 sample cannot feed 2 ranks
/// assert_eq!(steps_per_epoch(9, 4, 1), 3);  // one rank: the usual count, partial batch kept
/// ```
pub fn steps_per_epoch(n: usize, batch: usize, ranks: usize) -> usize {
    let global = batch * ranks;
    if global == 0 {
        return 0;
    }
    n / global + usize::from(n % global >= ranks)
}

/// The samples rank `rank` of `ranks` visits, in order, when the epoch's global order is
/// `order` and each rank takes `batch` samples per step. A loader that cuts this list into
/// batches of `batch` yields exactly this rank's local batch of every step.
///
/// # Panics
/// If `batch == 0` or `rank >= ranks`.
///
/// ```
/// use mpsnn::dist::shard::train_shard;
/// let order: Vec<usize> = (0..10).collect();
/// assert_eq!(train_shard(&order, 2, 2, 0), [0, 1, 4, 5, 8]);
/// assert_eq!(train_shard(&order, 2, 2, 1), [2, 3, 6, 7, 9]);
/// ```
pub fn train_shard(order: &[usize], batch: usize, ranks: usize, rank: usize) -> Vec<usize> {
    assert!(
        batch > 0 && rank < ranks,
        "train_shard: batch 0 or rank out of range"
    );
    let global = batch * ranks;
    let mut out = Vec::with_capacity(order.len() / ranks + batch);
    for g in order.chunks(global) {
        if g.len() < ranks {
            break;
        }
        out.extend_from_slice(&g[chunk(g.len(), ranks, rank)]);
    }
    out
}

/// The test samples rank `rank` of `ranks` evaluates: a contiguous block of `0..n`.
pub fn eval_shard(n: usize, ranks: usize, rank: usize) -> Range<usize> {
    chunk(n, ranks, rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_each_sample_once_and_rebuild_the_global_batches() {
        for n in [0, 1, 7, 10, 33, 64] {
            for ranks in 1..5 {
                for batch in 1..5 {
                    let order: Vec<usize> = (0..n).rev().collect();
                    let shards: Vec<Vec<usize>> = (0..ranks)
                        .map(|r| train_shard(&order, batch, ranks, r))
                        .collect();
                    let steps = steps_per_epoch(n, batch, ranks);
                    let mut rebuilt = Vec::new();
                    for s in 0..steps {
                        for shard in &shards {
                            let local = shard.chunks(batch).nth(s).expect("every rank steps");
                            assert!(!local.is_empty() && local.len() <= batch);
                            rebuilt.extend_from_slice(local);
                        }
                    }
                    assert!(shards.iter().all(|s| s.chunks(batch).count() == steps));
                    let skipped = n - rebuilt.len();
                    assert!(skipped < ranks, "n={n} ranks={ranks} batch={batch}");
                    assert_eq!(rebuilt, order[..rebuilt.len()]);
                }
            }
        }
    }

    #[test]
    fn eval_blocks_tile_the_test_set() {
        let blocks: Vec<_> = (0..3).map(|r| eval_shard(10, 3, r)).collect();
        assert_eq!(blocks, [0..3, 3..6, 6..10]);
    }
}
