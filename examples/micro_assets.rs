//! Produces the Cortex-M firmware's assets (`no_std/firmware`): an exported model, a few real
//! MNIST test images (raw `u8`), and the host runtime's predictions for them.
//!
//! ```text
//! cargo run --release --example micro_assets -- --out DIR [--blob model.mpsnn] [--int8] [--n 8]
//! ```
//!
//! With `--blob` (e.g. written by `mpsnn export --checkpoint ...`) that model is used as is.
//! Without it, the example builds a `mnist-cnn`-shaped network (conv16-pool-conv32-pool-fc)
//! with random convolutions, BatchNorm statistics and MP-Init μ calibrated on 200 training
//! images, and a linear head fitted by ridge regression on 1000 training images, then exports
//! it (T = 4). Files written: `model.mpsnn`, `images.bin` (`n × input_len` bytes),
//! `expected.bin` and `labels.bin` (one byte per image), `report.txt`.

#[path = "../tests/export_support/mod.rs"]
mod export_support;

use export_support::{mnist, mnist_cnn, normalize, trained_like};
use mpsnn::export::{export_model, infer_u8, ExportOptions};
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("micro_assets: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut out = None;
    let mut blob_path = None;
    let (mut int8, mut n, mut eval_n) = (false, 8usize, 1000usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(val()?)),
            "--blob" => blob_path = Some(PathBuf::from(val()?)),
            "--int8" => int8 = true,
            "--n" => n = val()?.parse().map_err(|e| format!("--n: {e}"))?,
            "--eval-n" => eval_n = val()?.parse().map_err(|e| format!("--eval-n: {e}"))?,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (blob, report) = match blob_path {
        Some(p) => (
            std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?,
            format!("model from {}\n", p.display()),
        ),
        None => {
            let t = 4;
            let spec = mnist_cnn(16, 32);
            let sd = trained_like(&spec, 7, 1000, t);
            let opts = ExportOptions {
                int8,
                ..ExportOptions::mnist()
            };
            let e = export_model(&spec, &sd, t, &opts).map_err(|e| e.to_string())?;
            (e.blob, e.report.to_string())
        }
    };
    print!("{report}");
    let (px, labels) = mnist(false, n.max(eval_n));
    let run = infer_u8(&blob, &px, labels.len()).map_err(|e| e.to_string())?;
    let acc = run
        .predictions
        .iter()
        .zip(&labels)
        .filter(|(a, b)| a == b)
        .count() as f64
        / labels.len() as f64;
    let summary = format!(
        "host runtime accuracy on the first {} MNIST test images: {:.4}\n",
        labels.len(),
        acc
    );
    print!("{summary}");
    let _ = normalize; // the f32 path is exercised by the tests
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes)
            .map_err(|e| format!("{}: {e}", out.join(name).display()))
    };
    write("model.mpsnn", &blob)?;
    write("images.bin", &px[..n * 784])?;
    write(
        "expected.bin",
        &run.predictions[..n]
            .iter()
            .map(|&p| p as u8)
            .collect::<Vec<_>>(),
    )?;
    write(
        "labels.bin",
        &labels[..n].iter().map(|&l| l as u8).collect::<Vec<_>>(),
    )?;
    write("report.txt", format!("{report}{summary}").as_bytes())?;
    println!(
        "wrote {} images and model.mpsnn ({} bytes) to {}",
        n,
        blob.len(),
        out.display()
    );
    Ok(())
}
