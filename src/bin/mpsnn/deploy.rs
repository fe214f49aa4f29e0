//! `export`, `infer` and the end-to-end `demo`.

use crate::args::{DemoArgs, ExportArgs, InferArgs, NeuronArgs, TrainArgs};
use crate::commands::{load_network, print_json, train};
use crate::datasets;
use mpsnn::data::{Dataset, DatasetName, Split};
use mpsnn::export::{export_model, infer_tensor, ExportOptions, InferSummary};
use mpsnn::train::checkpoint::write_atomic;
use mpsnn::train::run::Run;
use mpsnn::train::trainer::predict;
use mpsnn::{Error, Result};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// The dataset a checkpoint was trained on, from its metadata, if recorded.
fn checkpoint_dataset(meta: &serde_json::Value) -> Option<DatasetName> {
    meta["labels"]["dataset"]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// Exports `checkpoint` to `out`; returns the report text.
fn export_to(
    checkpoint: &Path,
    out: &Path,
    int8: bool,
    timesteps: Option<usize>,
    dataset: Option<DatasetName>,
) -> Result<String> {
    let (_, ckpt, trained_t) = load_network(checkpoint)?;
    let t = timesteps.unwrap_or(trained_t);
    let dataset = dataset.or_else(|| checkpoint_dataset(&ckpt.meta));
    let base = match dataset {
        Some(name) => ExportOptions::for_dataset(name),
        None => ExportOptions::identity(ckpt.spec.input[0]),
    };
    let exported = export_model(&ckpt.spec, &ckpt.model, t, &ExportOptions { int8, ..base })?;
    write_atomic(out, &exported.blob)?;
    Ok(format!("{}wrote {}", exported.report, out.display()))
}

/// `mpsnn export`
pub fn export(a: &ExportArgs) -> Result<()> {
    let dataset = a
        .dataset
        .as_deref()
        .map(datasets::dataset_name)
        .transpose()?;
    let report = export_to(&a.checkpoint, &a.out, a.int8, a.timesteps, dataset)?;
    eprintln!("{report}");
    Ok(())
}

/// Predictions of an exported blob (run by the micro runtime) on the test set, with labels.
fn micro_predictions(blob_path: &Path, test: &Arc<Dataset>) -> Result<(Vec<usize>, Vec<usize>)> {
    let blob = std::fs::read(blob_path).map_err(|e| Error::io(blob_path, e))?;
    let model = mpsnn_micro::Model::parse(&blob)
        .map_err(|e| Error::bad_file(blob_path, format!("not a valid model blob: {e}")))?;
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    for batch in datasets::test_batches(test, model.timesteps())? {
        let (input, y) = batch?;
        preds.extend(infer_tensor(&blob, &input)?.predictions);
        labels.extend(y);
    }
    Ok((preds, labels))
}

/// What `mpsnn eval` predicts for every test sample with the checkpoint's network.
fn eval_predictions(
    checkpoint: &Path,
    test: &Arc<Dataset>,
    timesteps: usize,
) -> Result<Vec<usize>> {
    let mut net = load_network(checkpoint)?.0;
    let mut preds = Vec::with_capacity(test.len());
    for batch in datasets::test_batches(test, timesteps)? {
        let (input, y) = batch?;
        preds.extend(predict(&mut net, input, y.len(), timesteps)?.0);
    }
    Ok(preds)
}

/// The timesteps a blob runs.
fn blob_timesteps(blob_path: &Path) -> Result<usize> {
    let blob = std::fs::read(blob_path).map_err(|e| Error::io(blob_path, e))?;
    mpsnn_micro::Model::parse(&blob)
        .map(|m| m.timesteps())
        .map_err(|e| Error::bad_file(blob_path, format!("not a valid model blob: {e}")))
}

/// `mpsnn infer`
pub fn infer(a: &InferArgs) -> Result<()> {
    let name = datasets::dataset_name(&a.dataset)?;
    let root = datasets::data_root(a.data_dir.as_deref());
    let test = datasets::load(name, Split::Test, &root, a.limit_test)?;
    let (preds, labels) = micro_predictions(&a.model, &test)?;
    let eval = match &a.checkpoint {
        Some(ckpt) => Some(eval_predictions(ckpt, &test, blob_timesteps(&a.model)?)?),
        None => {
            eprintln!("note: pass --checkpoint to measure agreement with `mpsnn eval`");
            None
        }
    };
    let summary = InferSummary::new(&preds, &labels, eval.as_deref().unwrap_or(&preds))?;
    let agreement = eval.is_some().then_some(summary.agreement_with_eval);
    print_json(
        &json!({"accuracy": summary.accuracy, "agreement_with_eval": agreement, "n": summary.n}),
    );
    Ok(())
}

/// `mpsnn demo`: fetch MNIST if needed, train mnist-cnn (T = 4, the paper's recipe), report
/// per-timestep accuracy, export f32 and int8 blobs, and run them with the micro runtime.
pub fn demo(a: &DemoArgs) -> Result<()> {
    let out = &a.out;
    if Run::last_checkpoint(out).exists() {
        eprintln!(
            "{} holds a finished or interrupted demo run; resuming it",
            out.display()
        );
    }
    let train_args = TrainArgs {
        dataset: "mnist".into(),
        model: "mnist-cnn".into(),
        timesteps: 4,
        epochs: a.epochs,
        batch_size: 64,
        lr: 0.02,
        optimizer: crate::args::OptimizerArg::Sgd,
        weight_decay: 5e-4,
        loss: crate::args::LossArg::MeanCe,
        tet_lambda: 0.0,
        dropout: None,
        augment: crate::args::AugmentArg::Auto,
        neuron: NeuronArgs::defaults(),
        seed: 1234,
        limit_train: a.limit_train,
        limit_test: None,
        data_dir: a.data_dir.clone(),
        out: out.clone(),
        resume: Run::last_checkpoint(out).exists(),
        stop_after: None,
        sync_bn: false,
        replica_dump: None,
    };
    let summary = train(&train_args)?;
    let per_t: Vec<String> = summary
        .final_test
        .accuracy_per_timestep
        .iter()
        .enumerate()
        .map(|(t, acc)| format!("t={}: {:.2}%", t + 1, 100.0 * acc))
        .collect();
    eprintln!(
        "test accuracy per timestep (cumulative mean of the first t outputs): {}",
        per_t.join(", ")
    );

    let ckpt = Run::last_checkpoint(out);
    let root = datasets::data_root(a.data_dir.as_deref());
    let test = datasets::load(DatasetName::Mnist, Split::Test, &root, None)?;
    let eval = eval_predictions(&ckpt, &test, 4)?;
    let mut results = serde_json::Map::new();
    results.insert("accuracy".into(), json!(summary.final_test.accuracy));
    results.insert(
        "accuracy_per_timestep".into(),
        json!(summary.final_test.accuracy_per_timestep),
    );
    results.insert("checkpoint".into(), json!(ckpt));
    for (label, int8) in [("f32", false), ("int8", true)] {
        let blob = out.join(format!("mnist-cnn-{label}.mpsnn"));
        eprintln!(
            "{}",
            export_to(&ckpt, &blob, int8, None, Some(DatasetName::Mnist))?
        );
        let (preds, labels) = micro_predictions(&blob, &test)?;
        let s = InferSummary::new(&preds, &labels, &eval)?;
        eprintln!(
            "micro runtime ({label}): accuracy {:.2}%, agreement with eval {:.2}% over {} test images",
            100.0 * s.accuracy,
            100.0 * s.agreement_with_eval,
            s.n
        );
        let bytes = std::fs::metadata(&blob)
            .map_err(|e| Error::io(&blob, e))?
            .len();
        results.insert(
            format!("micro_{label}"),
            json!({"accuracy": s.accuracy, "agreement_with_eval": s.agreement_with_eval, "n": s.n, "blob": blob, "bytes": bytes}),
        );
    }
    print_json(&serde_json::Value::Object(results));
    Ok(())
}
