//! Batch assembly throughput of the [`Loader`] (images/s, end to end through the prefetch
//! thread), to show data loading never bounds training: CIFAR-10 with and without the crop +
//! flip augmentation, MNIST, and N-MNIST binned into T = 10 frames. Reads `$MPSNN_DATA`
//! (default `../shared/data`).
//!
//! `cargo bench --bench data -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mpsnn::data::{Dataset, DatasetName, Loader, LoaderConfig, Split};
use std::path::PathBuf;
use std::sync::Arc;

fn root() -> PathBuf {
    std::env::var_os("MPSNN_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

fn load(name: DatasetName, n: usize) -> Arc<Dataset> {
    let mut d = Dataset::load(name, Split::Train, &root()).unwrap_or_else(|e| panic!("{e}"));
    d.truncate(n);
    Arc::new(d)
}

/// One epoch over `dataset` in batches of 64, consuming every batch.
fn epoch(dataset: &Arc<Dataset>, cfg: &LoaderConfig) -> usize {
    Loader::new(dataset.clone(), cfg)
        .unwrap()
        .map(|b| b.labels.len())
        .sum()
}

fn loaders(c: &mut Criterion) {
    let mut g = c.benchmark_group("loader");
    let cifar = load(DatasetName::Cifar10, 6400);
    g.throughput(Throughput::Elements(cifar.len() as u64));
    g.bench_function("cifar10_augmented_b64", |b| {
        let mut e = 0;
        b.iter(|| {
            e += 1;
            epoch(&cifar, &LoaderConfig::train(64, 4, 1, e))
        })
    });
    g.bench_function("cifar10_plain_b64", |b| {
        b.iter(|| epoch(&cifar, &LoaderConfig::new(64, 4)))
    });
    let mnist = load(DatasetName::Mnist, 6400);
    g.throughput(Throughput::Elements(mnist.len() as u64));
    g.bench_function("mnist_shuffled_b64", |b| {
        b.iter(|| epoch(&mnist, &LoaderConfig::train(64, 4, 1, 0)))
    });
    let nmnist = load(DatasetName::Nmnist, 1000);
    g.throughput(Throughput::Elements(nmnist.len() as u64));
    g.bench_function("nmnist_t10_b64", |b| {
        b.iter(|| epoch(&nmnist, &LoaderConfig::new(64, 10)))
    });
    g.finish();
}

criterion_group!(benches, loaders);
criterion_main!(benches);
