//! What the exporter refuses (one-line errors naming the layer), what it reports, and how it
//! plans scratch memory.

mod export_support;

use export_support::*;
use mpsnn::export::compile::compile;
use mpsnn::export::write::plan_scratch;
use mpsnn::export::{export_model, infer, infer_tensor, ExportOptions};
use mpsnn::nn::{LayerSpec, ModelSpec, StateDict};
use mpsnn::Tensor;

fn spec(layers: &str, input: [usize; 3], classes: usize) -> ModelSpec {
    ModelSpec {
        name: "t".into(),
        input: input.to_vec(),
        classes,
        encoding: Default::default(),
        layers: serde_json::from_str::<Vec<LayerSpec>>(layers).unwrap(),
    }
}

/// Unit parameters for every layer of `s` (weights 0.1, BN identity, θ = 1, λ = 0.5, μ = 0).
fn unit_state(s: &ModelSpec) -> StateDict {
    let mut sd = StateDict::new();
    fn walk(layers: &[LayerSpec], sd: &mut StateDict) {
        for l in layers {
            let n = l.name();
            let mut put = |k: &str, shape: &[usize], v: f32| {
                sd.insert(format!("{n}.{k}"), Tensor::full(shape, v));
            };
            match l {
                LayerSpec::Conv2d(c) => put(
                    "weight",
                    &[c.out_channels, c.in_channels, c.kernel, c.kernel],
                    0.1,
                ),
                LayerSpec::Linear(c) => {
                    put("weight", &[c.out_features, c.in_features], 0.1);
                    put("bias", &[c.out_features], 0.0);
                }
                LayerSpec::Batchnorm2d(b) => {
                    let c = b.num_features;
                    put("gamma", &[c], 1.0);
                    put("beta", &[c], 0.0);
                    put("running_mean", &[c], 0.0);
                    put("running_var", &[c], 1.0);
                }
                LayerSpec::Lif(_) => {
                    put("k", &[1], (1f32.exp() - 1.0).ln());
                    put("w", &[1], 0.0);
                    put("mu", &[1], 0.0);
                }
                LayerSpec::Residual(r) => {
                    walk(&r.body, sd);
                    walk(&r.shortcut, sd);
                }
                _ => {}
            }
        }
    }
    walk(&s.layers, &mut sd);
    sd
}

fn export_err(layers: &str, input: [usize; 3], classes: usize) -> String {
    let s = spec(layers, input, classes);
    let e = export_model(&s, &unit_state(&s), 4, &ExportOptions::identity(input[0]))
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

const CONV: &str = r#"{"type": "conv2d", "name": "conv", "in_channels": 1, "out_channels": 2, "kernel": 3, "padding": 1}"#;
const LIF: &str = r#"{"type": "lif", "name": "lif"}"#;
const HEAD: &str = r#"{"type": "flatten", "name": "flat"}, {"type": "linear", "name": "fc", "in_features": 32, "out_features": 3}"#;

#[test]
fn unsupported_constructs_name_the_layer() {
    let e = export_err(
        &format!(
            r#"[{CONV}, {LIF}, {{"type": "avgpool2d", "name": "ap", "kernel": 2}}, {{"type": "lif", "name": "lif2"}}, {HEAD}]"#
        ),
        [1, 4, 4],
        3,
    );
    assert!(
        e.contains("\"lif2\"") && e.contains("average pool \"ap\""),
        "{e}"
    );
    let e = export_err(
        &format!(r#"[{CONV}, {{"type": "maxpool2d", "name": "mp", "kernel": 2}}, {LIF}, {HEAD}]"#),
        [1, 4, 4],
        3,
    );
    assert!(e.contains("\"mp\"") && e.contains("max-pool"), "{e}");
    let e = export_err(
        &format!(
            r#"[{CONV}, {{"type": "conv2d", "name": "conv2", "in_channels": 2, "out_channels": 2, "kernel": 1}}, {LIF}, {HEAD}]"#
        ),
        [1, 4, 4],
        3,
    );
    assert!(e.contains("\"conv2\""), "{e}");
    let e = export_err(
        &format!(r#"[{CONV}, {LIF}, {{"type": "repeat", "name": "rep"}}, {HEAD}]"#),
        [1, 4, 4],
        3,
    );
    assert!(e.contains("\"rep\""), "{e}");
    let e = export_err(
        &format!(r#"[{CONV}, {LIF}, {{"type": "avgpool2d", "name": "ap", "kernel": 2}}, {HEAD}]"#),
        [1, 4, 4],
        3,
    );
    assert!(e.contains("fc") || e.contains("shape"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let s = spec(&format!("[{CONV}, {LIF}, {HEAD}]"), [1, 4, 4], 3);
    let mut sd = unit_state(&s);
    sd.remove("lif.mu");
    let e = export_model(&s, &sd, 4, &ExportOptions::identity(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lif.mu"), "{e}");
}

#[test]
fn report_lists_sizes_and_foldings() {
    let s = mnist_cnn(4, 8);
    let sd = unit_state(&s);
    let e = export_model(&s, &sd, 4, &ExportOptions::mnist()).unwrap();
    let r = &e.report;
    assert_eq!(r.blob_bytes, e.blob.len());
    assert_eq!((r.ops, r.lif_layers), (5, 2));
    // conv1 36 + conv2 288 + fc 3920 weights, biases 4 + 8 + 10, two LIF (λ, 1−λ, θ, μ): f32.
    assert_eq!(r.weight_bytes, 4 * (36 + 288 + 3920 + 4 + 8 + 10) + 2 * 16);
    let m = mpsnn_micro::Model::parse(&e.blob).unwrap();
    assert_eq!(r.scratch_bytes, m.scratch_bytes());
    let text = r.to_string();
    for needle in [
        "bytes of weights",
        "bytes of scratch RAM",
        "batchnorm bn1",
        "θ-scale 1.000000 of lif1 → weights of conv2",
        "dropout drop",
    ] {
        assert!(text.contains(needle), "report lacks {needle:?}:\n{text}");
    }
    let q = export_model(
        &s,
        &sd,
        4,
        &ExportOptions {
            int8: true,
            ..ExportOptions::mnist()
        },
    )
    .unwrap();
    assert!(
        q.report.weight_bytes < r.weight_bytes / 3,
        "int8 {} vs f32 {}",
        q.report.weight_bytes,
        r.weight_bytes
    );
}

#[test]
fn scratch_reuses_dead_buffers() {
    let s = mnist_cnn(4, 8);
    let p = compile(&s, &unit_state(&s), 4).unwrap();
    let (offsets, total) = plan_scratch(&p);
    let words: Vec<usize> = p
        .buffers
        .iter()
        .map(|b| (b.iter().product::<usize>() * 4).div_ceil(32))
        .collect();
    // lif1 [4,28,28] and pool1 [4,14,14] are live together; later buffers reuse lif1's words.
    assert_eq!(total, words[0] + words[1]);
    assert_eq!(offsets[2], 0);
    let r = spec(
        &format!(
            r#"[{CONV}, {LIF}, {{"type": "residual", "name": "res", "body": [
        {{"type": "conv2d", "name": "rc", "in_channels": 2, "out_channels": 2, "kernel": 3, "padding": 1}}, {{"type": "lif", "name": "rl"}},
        {{"type": "conv2d", "name": "rc2", "in_channels": 2, "out_channels": 2, "kernel": 3, "padding": 1}}]}},
        {{"type": "lif", "name": "out"}}, {HEAD}]"#
        ),
        [1, 4, 4],
        3,
    );
    let p = compile(&r, &unit_state(&r), 4).unwrap();
    let (offsets, _) = plan_scratch(&p);
    // The block input (buffer 0) stays live until the block's output LIF: nothing overlaps it.
    let w = (2 * 16 * 4usize).div_ceil(32);
    for b in 1..3 {
        assert!(
            offsets[b] >= offsets[0] + w || offsets[b] + w <= offsets[0],
            "buffer {b} overlaps the block input"
        );
    }
}

#[test]
fn infer_tensor_accepts_loader_layouts() {
    let s = mnist_cnn(4, 8);
    let sd = unit_state(&s);
    let blob = export_model(&s, &sd, 4, &ExportOptions::mnist())
        .unwrap()
        .blob;
    let (px, _) = mnist(false, 5);
    let x = normalize(&px);
    let a = infer(&blob, &x, 5).unwrap();
    let b = infer_tensor(&blob, &Tensor::from_vec(&[5, 1, 28, 28], x).unwrap()).unwrap();
    assert_eq!(a, b);
}
