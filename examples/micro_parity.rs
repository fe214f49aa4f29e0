//! Trained-model parity of the micro export (issue #5, "Prove it"), from a checkpoint:
//!
//! ```text
//! cargo run --release --example micro_parity -- --checkpoint runs/x/best.ckpt [--dataset mnist] [--out DIR] [--limit N]
//! ```
//!
//! Evaluates the checkpoint with the std network (`mpsnn eval` semantics) on the test split,
//! exports it as f32 and int8 blobs (written to `DIR`, default `target/micro-parity`), runs both
//! with the `mpsnn-micro` runtime on the same normalized batches, and prints the comparison.
//! The last stdout line is JSON. Exits non-zero unless every f32 prediction equals the std
//! network's and int8 loses at most 0.3 points of accuracy.

use mpsnn::data::{Dataset, DatasetName, Loader, LoaderConfig, Split};
use mpsnn::export::{export_model, infer_tensor, ExportOptions};
use mpsnn::nn::{ForwardCtx, Network};
use mpsnn::train::checkpoint::Checkpoint;
use std::path::PathBuf;
use std::sync::Arc;

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("micro_parity: {e}");
            std::process::exit(2);
        }
    }
}

fn data_root() -> PathBuf {
    std::env::var_os("MPSNN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

fn run() -> Result<bool, String> {
    let (mut ckpt, mut dataset, mut limit) = (None, "mnist".to_string(), None);
    let mut out = PathBuf::from("target/micro-parity");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--checkpoint" => ckpt = Some(PathBuf::from(val()?)),
            "--dataset" => dataset = val()?,
            "--out" => out = PathBuf::from(val()?),
            "--limit" => limit = Some(val()?.parse::<usize>().map_err(|e| e.to_string())?),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let path = ckpt.ok_or("--checkpoint FILE is required")?;
    let ckpt = Checkpoint::load(&path).map_err(|e| e.to_string())?;
    let t = ckpt.meta["config"]["timesteps"]
        .as_u64()
        .ok_or("checkpoint meta has no config.timesteps")? as usize;
    let name: DatasetName = dataset.parse().map_err(|e: mpsnn::Error| e.to_string())?;
    let mut ds = Dataset::load(name, Split::Test, &data_root()).map_err(|e| e.to_string())?;
    if let Some(n) = limit {
        ds.truncate(n);
    }
    let n = ds.len();
    let mut net = Network::new(ckpt.spec.clone(), 0).map_err(|e| e.to_string())?;
    net.load_state_dict(&ckpt.model)
        .map_err(|e| e.to_string())?;
    let f32_opts = ExportOptions::for_dataset(name);
    let q_opts = ExportOptions {
        int8: true,
        ..f32_opts.clone()
    };
    let f = export_model(&ckpt.spec, &ckpt.model, t, &f32_opts).map_err(|e| e.to_string())?;
    let q = export_model(&ckpt.spec, &ckpt.model, t, &q_opts).map_err(|e| e.to_string())?;
    print!("{}{}", f.report, q.report);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("model-f32.mpsnn"), &f.blob).map_err(|e| e.to_string())?;
    std::fs::write(out.join("model-int8.mpsnn"), &q.blob).map_err(|e| e.to_string())?;

    let k = ckpt.spec.classes;
    let (mut correct, mut agree_f, mut agree_q) = ([0usize; 3], 0usize, 0usize);
    let (mut max_diff, mut beyond) = (0.0f32, 0usize);
    let loader =
        Loader::new(Arc::new(ds), &LoaderConfig::new(200, t)).map_err(|e| e.to_string())?;
    for batch in loader {
        let b = batch.labels.len();
        let logits = net
            .forward(batch.input.clone(), &ForwardCtx::eval(t))
            .map_err(|e| e.to_string())?;
        let l = logits.data();
        let mean: Vec<f32> = (0..b * k)
            .map(|j| (0..t).map(|s| l[(s * b + j / k) * k + j % k]).sum::<f32>() / t as f32)
            .collect();
        let eval: Vec<usize> = mean
            .chunks(k)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(0, |m, (i, &v)| if v > r[m] { i } else { m })
            })
            .collect();
        let rf = infer_tensor(&f.blob, &batch.input).map_err(|e| e.to_string())?;
        let rq = infer_tensor(&q.blob, &batch.input).map_err(|e| e.to_string())?;
        for i in 0..b {
            let y = batch.labels[i];
            correct[0] += usize::from(eval[i] == y);
            correct[1] += usize::from(rf.predictions[i] == y);
            correct[2] += usize::from(rq.predictions[i] == y);
            agree_f += usize::from(rf.predictions[i] == eval[i]);
            agree_q += usize::from(rq.predictions[i] == eval[i]);
            let d = (0..k)
                .map(|c| (rf.scores[i * k + c] - mean[i * k + c]).abs())
                .fold(0.0, f32::max);
            max_diff = max_diff.max(d);
            beyond += usize::from(d > 1e-4);
        }
    }
    let acc = |c: usize| c as f64 / n as f64;
    let loss = 100.0 * (acc(correct[1]) - acc(correct[2]));
    println!(
        "std eval accuracy {:.4}; f32 blob accuracy {:.4}, agreement {agree_f}/{n}, max |logit diff| {max_diff:.2e} ({beyond} samples beyond 1e-4); int8 blob accuracy {:.4} ({loss:+.2} points vs f32), agreement {agree_q}/{n}",
        acc(correct[0]),
        acc(correct[1]),
        acc(correct[2])
    );
    println!(
        "{}",
        serde_json::json!({
            "n": n,
            "eval_accuracy": acc(correct[0]),
            "f32_accuracy": acc(correct[1]),
            "f32_agreement_with_eval": acc(agree_f),
            "f32_max_logit_diff": max_diff,
            "f32_samples_beyond_1e-4": beyond,
            "int8_accuracy": acc(correct[2]),
            "int8_agreement_with_eval": acc(agree_q),
            "int8_accuracy_loss_points": loss,
        })
    );
    Ok(agree_f == n && loss <= 0.3)
}
