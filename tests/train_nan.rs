//! A NaN loss or gradient stops the run with an error naming the epoch and batch, and the last good
//! checkpoint stays intact and loadable.

use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::Network;
use mpsnn::train::run::{Batches, DataSource, Run, Silent};
use mpsnn::train::{Checkpoint, TrainConfig};
use mpsnn::{Error, Result, Tensor};

/// Random 8×8 "images"; in epoch 2 (0-based 1), batch 3 carries a NaN pixel.
struct Poisoned;

fn batch(seed: usize, poison: bool) -> (Tensor, Vec<usize>) {
    let mut data: Vec<f32> = (0..4 * 64)
        .map(|i| ((i * 7 + seed * 13) % 17) as f32 / 17.0)
        .collect();
    if poison {
        data[5] = f32::NAN;
    }
    (
        Tensor::from_vec(&[4, 1, 8, 8], data).unwrap(),
        vec![seed % 3, 1, 2, 0],
    )
}

impl DataSource for Poisoned {
    fn train(&self, epoch: usize) -> Result<Batches<'_>> {
        Ok(Box::new(
            (0..5).map(move |i| Ok(batch(i, epoch == 1 && i == 3))),
        ))
    }
    fn test(&self) -> Result<Batches<'_>> {
        Ok(Box::new((0..2).map(|i| Ok(batch(i, false)))))
    }
    fn train_batches(&self) -> usize {
        5
    }
}

#[test]
fn nan_stops_with_epoch_and_batch_and_keeps_the_checkpoint() {
    let dir = std::env::temp_dir().join(format!("mpsnn-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = build("mnist-cnn", &ModelOptions::new([1, 8, 8], 3)).unwrap();
    let net = Network::new(spec, 3).unwrap();
    let mut config = TrainConfig::paper(2, 3);
    config.batch_size = 4;
    let mut run = Run::new(&dir, net, config).unwrap();
    let err = run.run(&Poisoned, &mut Silent, None).unwrap_err();
    match &err {
        Error::NonFinite { epoch, batch, .. } => assert_eq!((*epoch, *batch), (2, 3)),
        other => panic!("expected NonFinite, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("epoch 2") && msg.contains("batch 3"), "{msg}");

    let ckpt = Checkpoint::load(&Run::last_checkpoint(&dir)).unwrap();
    assert_eq!(ckpt.meta["epochs_done"], 1);
    assert!(ckpt
        .model
        .values()
        .all(|t| t.data().iter().all(|v| v.is_finite())));
    let resumed = Run::resume(&dir, None).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nan_logits_are_reported_as_a_non_finite_loss() {
    let spec: mpsnn::nn::ModelSpec = serde_json::from_str(
        r#"{"name": "lin", "input": [1, 8, 8], "classes": 3,
            "layers": [{"type": "flatten", "name": "f"},
                       {"type": "linear", "name": "fc", "in_features": 64, "out_features": 3}]}"#,
    )
    .unwrap();
    let mut trainer =
        mpsnn::train::Trainer::new(Network::new(spec, 1).unwrap(), TrainConfig::paper(2, 1));
    let (x, y) = batch(0, true);
    let before = trainer.net.state_dict();
    match trainer.step(x, &y, 0.1, 4, 9) {
        Err(Error::NonFinite {
            what,
            epoch: 4,
            batch: 9,
        }) => assert!(what.starts_with("loss"), "{what}"),
        other => panic!("expected a non-finite loss, got {other:?}"),
    }
    assert_eq!(
        trainer.net.state_dict(),
        before,
        "nothing may change on a NaN step"
    );
}
