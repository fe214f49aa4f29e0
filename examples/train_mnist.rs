//! Training an SNN with the library API (what `mpsnn train` does, in 60 lines): build
//! `mnist-cnn` from its spec, train it with the paper's recipe, evaluate per timestep, and read
//! each LIF layer's learned θ, τ and MP-Init potential μ.
//!
//! ```text
//! MPSNN_DATA=../shared/data cargo run --release --example train_mnist -- [epochs] [train images]
//! ```

use mpsnn::data::{resolve_data_root, Dataset, DatasetName, Loader, LoaderConfig, Split};
use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::Network;
use mpsnn::train::run::lif_records;
use mpsnn::train::{evaluate, Loss, TrainConfig, Trainer};
use std::sync::Arc;

fn main() -> mpsnn::Result<()> {
    let mut args = std::env::args().skip(1);
    let epochs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let limit: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);

    let root = resolve_data_root(None);
    let mut train = Dataset::load(DatasetName::Mnist, Split::Train, &root)?;
    train.truncate(limit);
    let (train, test) = (
        Arc::new(train),
        Arc::new(Dataset::load(DatasetName::Mnist, Split::Test, &root)?),
    );

    // Models are data: the built-in spec could equally be read from a JSON file.
    let spec = build(
        "mnist-cnn",
        &ModelOptions::new(train.sample_shape(), train.classes()),
    )?;
    let config = TrainConfig::paper(4, epochs); // T = 4, SGD 0.9, lr 0.02, wd 5e-4, cosine, batch 64
    let mut trainer = Trainer::new(Network::new(spec, config.seed)?, config.clone());

    for epoch in 0..epochs {
        let loader = Loader::new(
            Arc::clone(&train),
            &LoaderConfig::train(config.batch_size, 4, config.seed, epoch as u64),
        )?;
        let stats = trainer.train_epoch(
            epoch,
            loader.map(|b| Ok((b.input, b.labels))),
            &mut |_, _| {},
        )?;
        let test_batches = Loader::new(Arc::clone(&test), &LoaderConfig::new(256, 4))?;
        let eval = evaluate(
            &mut trainer.net,
            4,
            Loss::MeanCe,
            test_batches.map(|b| Ok((b.input, b.labels))),
        )?;
        println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2}% (per timestep: {})",
            epoch + 1,
            stats.loss,
            100.0 * eval.accuracy,
            eval.accuracy_per_timestep
                .iter()
                .map(|a| format!("{:.2}%", 100.0 * a))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for lif in lif_records(&mut trainer.net) {
        println!(
            "{}: θ = {:.3}, τ = {:.3}, μ = {:.3}, firing rate {:.3}",
            lif.name, lif.theta, lif.tau, lif.mu, lif.firing_rate
        );
    }
    Ok(())
}
