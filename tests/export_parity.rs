//! The exported blob, run by `mpsnn-micro`, against the unfolded f64 reference evaluator
//! (`mpsnn::export::reference`) on real MNIST test images.
//!
//! Tolerance: predictions must be equal on every sample; mean-over-T scores within
//! `SCORE_TOL` (absolute; logits here are O(1)). Folding θ and BN into the weights changes the
//! f32 rounding of the currents by ~1e-7 relative, which can flip a spike only when a membrane
//! lands within that distance of θ; the tests count how often a score differs by more than
//! rounding noise and keep the worst difference small.

mod export_support;

use export_support::*;
use mpsnn::export::reference::{argmax_rows, evaluate};
use mpsnn::export::{export_model, infer, infer_u8, ExportOptions};
use mpsnn::nn::ModelSpec;

const T: usize = 4;
const N_TEST: usize = 300;
const SCORE_TOL: f64 = 2e-3;

struct Parity {
    agree: usize,
    n: usize,
    max_diff: f64,
    /// Accuracy (on labels) of the reference and of the blob.
    acc: (f64, f64),
}

fn parity(spec: &ModelSpec, seed: u64, int8: bool) -> Parity {
    let sd = trained_like(spec, seed, 1000, T);
    let (px, labels) = mnist(false, N_TEST);
    let x = normalize(&px);
    let reference = evaluate(spec, &sd, &x, N_TEST, T).unwrap();
    let opts = ExportOptions {
        int8,
        ..ExportOptions::mnist()
    };
    let exported = export_model(spec, &sd, T, &opts).unwrap();
    let run = infer(&exported.blob, &x, N_TEST).unwrap();
    let want = argmax_rows(&reference, 10);
    let agree = run
        .predictions
        .iter()
        .zip(&want)
        .filter(|(a, b)| a == b)
        .count();
    let max_diff = run
        .scores
        .iter()
        .zip(&reference)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max);
    // The predictions must not be constant, or agreement would prove nothing.
    let distinct = want.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(
        distinct >= 4,
        "{}: reference predicts only {distinct} classes",
        spec.name
    );
    let accuracy =
        |p: &[usize]| p.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / N_TEST as f64;
    let acc = (accuracy(&want), accuracy(&run.predictions));
    println!(
        "{} int8={int8}: agree {agree}/{N_TEST}, max |score diff| {max_diff:.2e}, accuracy reference {:.3} blob {:.3}",
        spec.name, acc.0, acc.1
    );
    Parity {
        agree,
        n: N_TEST,
        max_diff,
        acc,
    }
}

#[test]
fn mnist_cnn_f32_matches_reference() {
    let p = parity(&mnist_cnn(8, 16), 1, false);
    assert_eq!(p.agree, p.n);
    assert!(p.max_diff < SCORE_TOL, "max score diff {}", p.max_diff);
}

#[test]
fn resnet_f32_matches_reference() {
    let p = parity(&resnet(), 2, false);
    assert_eq!(p.agree, p.n);
    assert!(p.max_diff < SCORE_TOL, "max score diff {}", p.max_diff);
}

#[test]
fn avgpool_hard_reset_as_sg_f32_matches_reference() {
    let p = parity(&avgpool_mix(), 3, false);
    assert_eq!(p.agree, p.n);
    assert!(p.max_diff < SCORE_TOL, "max score diff {}", p.max_diff);
}

#[test]
fn int8_accuracy_close_to_f32() {
    let p = parity(&mnist_cnn(8, 16), 1, true);
    assert!(
        p.agree as f64 >= 0.97 * p.n as f64,
        "int8 agreement {}/{}",
        p.agree,
        p.n
    );
    assert!(
        p.acc.1 >= p.acc.0 - 0.01,
        "int8 accuracy {} vs f32 reference {}",
        p.acc.1,
        p.acc.0
    );
}

/// The int8 runtime path computes exactly what an f32 blob with the dequantized weights
/// `q·s` computes (up to f32 summation rounding): i32 accumulation, per-channel scales,
/// pooled and residual terms.
#[test]
fn int8_runtime_matches_dequantized_f32() {
    use mpsnn::export::compile::compile;
    use mpsnn::export::ir::{Op, Source, TermKind};
    use mpsnn::export::write::{quantize_rows, write, Layout};
    for (spec, seed) in [(mnist_cnn(8, 16), 1), (resnet(), 2), (avgpool_mix(), 3)] {
        let sd = trained_like(&spec, seed, 300, T);
        let program = compile(&spec, &sd, T).unwrap();
        let mut deq = program.clone();
        for op in &mut deq.ops {
            if let Op::Neuron { terms, .. } | Op::Readout { terms, .. } = op {
                for t in terms.iter_mut().filter(|t| t.source != Source::Input) {
                    if let TermKind::Conv { w, cout, .. } = &mut t.kind {
                        let (q, s) = quantize_rows(w, *cout);
                        let row = w.len() / *cout;
                        *w = q
                            .iter()
                            .enumerate()
                            .map(|(i, &q)| f64::from(q) * f64::from(s[i / row]))
                            .collect();
                    }
                }
            }
        }
        let (mean, std) = ([0.1307f32], [0.3081f32]);
        let layout = |int8| Layout {
            int8,
            mean: &mean,
            std: &std,
            u8_div: 255.0,
        };
        let (b8, _) = write(&program, &layout(true)).unwrap();
        let (bf, _) = write(&deq, &layout(false)).unwrap();
        let (px, _) = mnist(false, 200);
        let x = normalize(&px);
        let (r8, rf) = (infer(&b8, &x, 200).unwrap(), infer(&bf, &x, 200).unwrap());
        let agree = r8
            .predictions
            .iter()
            .zip(&rf.predictions)
            .filter(|(a, b)| a == b)
            .count();
        let diff = r8
            .scores
            .iter()
            .zip(&rf.scores)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        println!(
            "{}: int8 vs dequantized f32: agree {agree}/200, max |score diff| {diff:.2e}",
            spec.name
        );
        assert!(
            agree == 200 && diff < 1e-4,
            "{}: {agree}/200, {diff}",
            spec.name
        );
    }
}

#[test]
fn raw_u8_input_matches_normalized_f32_input() {
    let spec = mnist_cnn(8, 16);
    let (calib_px, _) = mnist(true, 100);
    let sd = random_state(&spec, 4, &normalize(&calib_px), T);
    let (px, _) = mnist(false, 100);
    let blob = export_model(&spec, &sd, T, &ExportOptions::mnist())
        .unwrap()
        .blob;
    let a = infer(&blob, &normalize(&px), 100).unwrap();
    let b = infer_u8(&blob, &px, 100).unwrap();
    assert_eq!(a, b, "the device's u8 path must normalize bit-identically");
}

/// Event frames (`encoding: frames`): one analog frame per timestep into the stem.
#[test]
fn nmnist_frames_f32_matches_reference() {
    use mpsnn::data::Split;
    let spec = nmnist_cnn();
    let sd = trained_like_frames(&spec, 5, T);
    let (x, labels) = nmnist(Split::Test, 100, T);
    let n = labels.len();
    let reference = evaluate(&spec, &sd, &frames_time_major(&x, n, T), n, T).unwrap();
    let blob = export_model(&spec, &sd, T, &ExportOptions::identity(2))
        .unwrap()
        .blob;
    let run = infer(&blob, &x, n).unwrap();
    let want = argmax_rows(&reference, 10);
    let diff = run
        .scores
        .iter()
        .zip(&reference)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max);
    let acc = want.iter().zip(&labels).filter(|(a, b)| a == b).count();
    println!("nmnist frames: accuracy {acc}/{n}, max |score diff| {diff:.2e}");
    assert_eq!(run.predictions, want);
    assert!(diff < SCORE_TOL, "max score diff {diff}");
    assert!(
        acc * 2 > n,
        "the fitted frame network should classify ({acc}/{n})"
    );
}
