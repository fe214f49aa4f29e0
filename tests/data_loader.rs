//! The batch loader's contract on a small synthetic MNIST-format dataset: epoch order,
//! coverage, batch shapes, determinism, bounded background prefetch and clean shutdown.

#[path = "data/support.rs"]
mod support;

use mpsnn::data::{
    augment_params, epoch_permutation, Dataset, DatasetName, Loader, LoaderConfig, Split,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 103 train images (not a multiple of common batch sizes) in a temp root.
fn dataset() -> (tempfile::TempDir, Arc<Dataset>) {
    let root = tempfile::tempdir().unwrap();
    support::write_idx_split(&root.path().join("mnist"), "train", 103, true, 1);
    let d = Dataset::load(DatasetName::Mnist, Split::Train, root.path()).unwrap();
    (root, Arc::new(d))
}

#[test]
fn permutation_is_a_pinned_pure_function_of_seed_and_epoch() {
    let p = epoch_permutation(1000, 1234, 0);
    assert_eq!(p, epoch_permutation(1000, 1234, 0));
    let mut sorted = p.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_ne!(p, epoch_permutation(1000, 1234, 1));
    assert_ne!(p, epoch_permutation(1000, 1235, 0));
    // Pinned (values from the independent `tests/data/chacha_reference.py`) so a changed
    // algorithm, which would break resumed and multi-process runs, cannot go unnoticed.
    assert_eq!(epoch_permutation(10, 0, 0), [4, 6, 8, 2, 9, 7, 1, 0, 3, 5]);
    assert_eq!(
        epoch_permutation(10, 1234, 5),
        [1, 7, 3, 5, 2, 0, 8, 4, 9, 6]
    );
    let aug: Vec<_> = (0..4)
        .map(|i| {
            let a = augment_params(99, 3, i);
            (a.top, a.left, a.flip)
        })
        .collect();
    assert_eq!(
        aug,
        [(5, 7, true), (1, 4, false), (4, 0, false), (0, 4, false)]
    );
    assert!(epoch_permutation(0, 1, 1).is_empty());
    assert_eq!(epoch_permutation(1, 1, 1), vec![0]);
}

#[test]
fn every_sample_once_per_epoch_with_a_short_last_batch() {
    let (_root, d) = dataset();
    let cfg = LoaderConfig {
        shuffle: true,
        seed: 3,
        epoch: 1,
        ..LoaderConfig::new(10, 1)
    };
    let batches: Vec<_> = Loader::new(d.clone(), &cfg).unwrap().collect();
    assert_eq!(batches.len(), 11);
    assert!(batches[..10]
        .iter()
        .all(|b| b.input.shape() == [10, 1, 28, 28]));
    assert_eq!(batches[10].input.shape(), &[3, 1, 28, 28]);
    let order: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, epoch_permutation(103, 3, 1));
    for b in &batches {
        assert_eq!(
            b.labels,
            b.indices.iter().map(|&i| d.label(i)).collect::<Vec<_>>()
        );
    }
    let dropped = Loader::new(
        d,
        &LoaderConfig {
            drop_last: true,
            ..cfg
        },
    )
    .unwrap();
    assert_eq!(dropped.len(), 10);
    assert_eq!(dropped.map(|b| b.labels.len()).sum::<usize>(), 100);
}

#[test]
fn identical_configs_give_identical_batches() {
    let (_root, d) = dataset();
    let cfg = LoaderConfig {
        prefetch: 1,
        ..LoaderConfig::train(16, 4, 42, 7)
    };
    let a: Vec<_> = Loader::new(d.clone(), &cfg).unwrap().collect();
    let b: Vec<_> = Loader::new(d.clone(), &LoaderConfig { prefetch: 4, ..cfg })
        .unwrap()
        .collect();
    assert_eq!(a, b);
    let bits = |v: &[mpsnn::data::Batch]| -> Vec<u32> {
        v.iter()
            .flat_map(|b| b.input.data().iter().map(|x| x.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn rank_shards_of_the_permutation_cover_the_epoch() {
    let (_root, d) = dataset();
    let perm = epoch_permutation(d.len(), 9, 0);
    let mut seen = Vec::new();
    for rank in 0..3 {
        let shard: Vec<usize> = perm.iter().skip(rank).step_by(3).copied().collect();
        let loader = Loader::with_order(d.clone(), shard, &LoaderConfig::new(8, 1)).unwrap();
        seen.extend(loader.flat_map(|b| b.indices));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..d.len()).collect::<Vec<_>>());
}

#[test]
fn background_thread_prefetches_a_bounded_number_of_batches() {
    let (_root, d) = dataset();
    let cfg = LoaderConfig {
        prefetch: 2,
        ..LoaderConfig::new(4, 1)
    };
    let mut loader = Loader::new(d, &cfg).unwrap();
    // Without any consumer call the worker fills the channel (2) and finishes one more batch,
    // which then waits to be sent.
    wait_until(|| loader.assembled() == 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        loader.assembled(),
        3,
        "the worker ran past the channel bound"
    );
    assert!(loader.next().is_some());
    assert_eq!(loader.stalls(), 0, "a prefetched batch was not ready");
    wait_until(|| loader.assembled() == 4);
    assert_eq!(loader.remaining(), 25);
}

fn wait_until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 20 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn dropping_mid_epoch_stops_the_worker() {
    let (_root, d) = dataset();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for prefetch in [1, 3] {
            let mut loader = Loader::new(
                d.clone(),
                &LoaderConfig {
                    prefetch,
                    ..LoaderConfig::new(2, 1)
                },
            )
            .unwrap();
            loader.next().unwrap();
            drop(loader); // Joins the worker, which is blocked on a full channel.
            drop(Loader::new(d.clone(), &LoaderConfig::new(2, 1)).unwrap()); // Never consumed.
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("dropping a loader deadlocked");
}

#[test]
fn invalid_configurations_are_errors() {
    let (_root, d) = dataset();
    let msg = |r: mpsnn::Result<Loader>| r.unwrap_err().to_string();
    assert!(msg(Loader::new(d.clone(), &LoaderConfig::new(0, 1))).contains("batch_size"));
    assert!(msg(Loader::new(
        d.clone(),
        &LoaderConfig {
            prefetch: 0,
            ..LoaderConfig::new(4, 1)
        }
    ))
    .contains("prefetch"));
    assert!(msg(Loader::with_order(
        d,
        vec![0, 103],
        &LoaderConfig::new(4, 1)
    ))
    .contains("103 out of range"));
}
