//! Shared helpers for the export tests and the firmware-asset example: MNIST test images,
//! model specs shaped like the built-in ones, and random-but-realistic state dicts.
#![allow(dead_code)]

use mpsnn::data::{Dataset, DatasetName, Loader, LoaderConfig, Split};
use mpsnn::export::reference;
use mpsnn::nn::build::{init_rng, uniform};
use mpsnn::nn::{LayerSpec, ModelSpec, StateDict};
use mpsnn::Tensor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `MPSNN_DATA`, else `../shared/data` beside the checkout.
pub fn data_dir() -> PathBuf {
    std::env::var_os("MPSNN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// MNIST images (u8, 784 each) and labels of `train` or test split; the first `n`.
pub fn mnist(train: bool, n: usize) -> (Vec<u8>, Vec<usize>) {
    let split = if train { Split::Train } else { Split::Test };
    let ds = Dataset::load(DatasetName::Mnist, split, &data_dir())
        .unwrap_or_else(|e| panic!("{e} (set MPSNN_DATA to the datasets folder)"));
    let n = n.min(ds.len());
    let px = (0..n)
        .flat_map(|i| ds.image(i).unwrap().iter().copied())
        .collect();
    (px, (0..n).map(|i| ds.label(i)).collect())
}

/// `n` N-MNIST samples of `split` binned into `t` frames: `[n, T, 2, 34, 34]` sample-major
/// (what the runtime takes) and the labels.
pub fn nmnist(split: Split, n: usize, t: usize) -> (Vec<f32>, Vec<usize>) {
    let mut ds = Dataset::load(DatasetName::Nmnist, split, &data_dir())
        .unwrap_or_else(|e| panic!("{e} (set MPSNN_DATA to the datasets folder)"));
    ds.truncate(n);
    let n = ds.len();
    let batch = Loader::new(Arc::new(ds), &LoaderConfig::new(n, t))
        .unwrap()
        .next()
        .unwrap();
    (frames_sample_major(batch.input.data(), n, t), batch.labels)
}

/// `[T·B, ...]` time-major → `[B, T, ...]` sample-major.
pub fn frames_sample_major(x: &[f32], b: usize, t: usize) -> Vec<f32> {
    let per = x.len() / (b * t);
    (0..b)
        .flat_map(|i| {
            (0..t).flat_map(move |k| x[(k * b + i) * per..(k * b + i + 1) * per].iter().copied())
        })
        .collect()
}

/// `[B, T, ...]` sample-major → `[T·B, ...]` time-major.
pub fn frames_time_major(x: &[f32], b: usize, t: usize) -> Vec<f32> {
    let per = x.len() / (b * t);
    (0..t)
        .flat_map(|k| {
            (0..b).flat_map(move |i| x[(i * t + k) * per..(i * t + k + 1) * per].iter().copied())
        })
        .collect()
}

/// MNIST normalization as the std pipeline applies it: `(p / 255 − 0.1307) / 0.3081` in f32.
pub fn normalize(px: &[u8]) -> Vec<f32> {
    px.iter()
        .map(|&p| (f32::from(p) / 255.0 - 0.1307) / 0.3081)
        .collect()
}

fn layers(json: &str) -> Vec<LayerSpec> {
    serde_json::from_str(json).expect("layer json")
}

/// A `mnist-cnn`-shaped network: two conv-BN-LIF-maxpool stages and a linear head, with the
/// stem before `repeat` (direct encoding point).
pub fn mnist_cnn(c1: usize, c2: usize) -> ModelSpec {
    ModelSpec {
        name: "mnist-cnn-test".into(),
        input: vec![1, 28, 28],
        classes: 10,
        encoding: Default::default(),
        layers: layers(&format!(
            r#"[
            {{"type": "conv2d", "name": "conv1", "in_channels": 1, "out_channels": {c1}, "kernel": 3, "padding": 1}},
            {{"type": "batchnorm2d", "name": "bn1", "num_features": {c1}}},
            {{"type": "repeat", "name": "rep"}},
            {{"type": "lif", "name": "lif1"}},
            {{"type": "maxpool2d", "name": "pool1", "kernel": 2}},
            {{"type": "conv2d", "name": "conv2", "in_channels": {c1}, "out_channels": {c2}, "kernel": 3, "padding": 1}},
            {{"type": "batchnorm2d", "name": "bn2", "num_features": {c2}}},
            {{"type": "lif", "name": "lif2"}},
            {{"type": "maxpool2d", "name": "pool2", "kernel": 2}},
            {{"type": "flatten", "name": "flat"}},
            {{"type": "dropout", "name": "drop", "p": 0.2}},
            {{"type": "linear", "name": "fc", "in_features": {}, "out_features": 10}}
        ]"#,
            c2 * 49
        )),
    }
}

/// A small ResNet: stem, an identity block, a downsampling block with a conv shortcut, global
/// average pool and a linear head.
pub fn resnet() -> ModelSpec {
    ModelSpec {
        name: "resnet-test".into(),
        input: vec![1, 28, 28],
        classes: 10,
        encoding: Default::default(),
        layers: layers(
            r#"[
            {"type": "conv2d", "name": "stem", "in_channels": 1, "out_channels": 8, "kernel": 3, "stride": 2, "padding": 1},
            {"type": "batchnorm2d", "name": "stem_bn", "num_features": 8},
            {"type": "lif", "name": "stem_lif"},
            {"type": "residual", "name": "block1",
             "body": [
               {"type": "conv2d", "name": "b1c1", "in_channels": 8, "out_channels": 8, "kernel": 3, "padding": 1},
               {"type": "batchnorm2d", "name": "b1n1", "num_features": 8},
               {"type": "lif", "name": "b1l1"},
               {"type": "conv2d", "name": "b1c2", "in_channels": 8, "out_channels": 8, "kernel": 3, "padding": 1},
               {"type": "batchnorm2d", "name": "b1n2", "num_features": 8}],
             "shortcut": []},
            {"type": "lif", "name": "block1_lif"},
            {"type": "residual", "name": "block2",
             "body": [
               {"type": "conv2d", "name": "b2c1", "in_channels": 8, "out_channels": 16, "kernel": 3, "stride": 2, "padding": 1},
               {"type": "batchnorm2d", "name": "b2n1", "num_features": 16},
               {"type": "lif", "name": "b2l1"},
               {"type": "conv2d", "name": "b2c2", "in_channels": 16, "out_channels": 16, "kernel": 3, "padding": 1},
               {"type": "batchnorm2d", "name": "b2n2", "num_features": 16}],
             "shortcut": [
               {"type": "conv2d", "name": "b2sc", "in_channels": 8, "out_channels": 16, "kernel": 1, "stride": 2},
               {"type": "batchnorm2d", "name": "b2scn", "num_features": 16}]},
            {"type": "lif", "name": "block2_lif"},
            {"type": "global_avgpool2d", "name": "gap"},
            {"type": "flatten", "name": "flat"},
            {"type": "linear", "name": "fc", "in_features": 16, "out_features": 10}
        ]"#,
        ),
    }
}

/// The remaining runtime paths: average pools into a conv and into a linear, a hidden
/// spiking linear layer, hard reset, AS-SG (binary outputs), MP-Init off, conv biases.
pub fn avgpool_mix() -> ModelSpec {
    ModelSpec {
        name: "avgpool-mix".into(),
        input: vec![1, 28, 28],
        classes: 10,
        encoding: Default::default(),
        layers: layers(
            r#"[
            {"type": "conv2d", "name": "c1", "in_channels": 1, "out_channels": 6, "kernel": 5, "bias": true},
            {"type": "batchnorm2d", "name": "n1", "num_features": 6},
            {"type": "lif", "name": "l1", "reset": "hard"},
            {"type": "avgpool2d", "name": "ap1", "kernel": 2},
            {"type": "conv2d", "name": "c2", "in_channels": 6, "out_channels": 12, "kernel": 3, "padding": 1, "bias": true},
            {"type": "batchnorm2d", "name": "n2", "num_features": 12},
            {"type": "lif", "name": "l2", "surrogate": "as"},
            {"type": "maxpool2d", "name": "mp2", "kernel": 3, "stride": 2, "padding": 1},
            {"type": "avgpool2d", "name": "ap2", "kernel": 2, "stride": 1},
            {"type": "flatten", "name": "flat"},
            {"type": "linear", "name": "fc1", "in_features": 300, "out_features": 32},
            {"type": "lif", "name": "l3", "mp_init": false},
            {"type": "linear", "name": "fc2", "in_features": 32, "out_features": 10}
        ]"#,
        ),
    }
}

fn visit<'a>(layers: &'a [LayerSpec], out: &mut Vec<&'a LayerSpec>) {
    for l in layers {
        if let LayerSpec::Residual(r) = l {
            visit(&r.body, out);
            visit(&r.shortcut, out);
        }
        out.push(l);
    }
}

/// Random parameters with the std layers' shapes: PyTorch-default conv/linear init,
/// BN affine near identity, θ ∈ [0.6, 1.4], τ ∈ [1.4, 3]. Running statistics and μ are then
/// calibrated on `calib` (normalized images) so every layer is active.
pub fn random_state(spec: &ModelSpec, seed: u64, calib: &[f32], t: usize) -> StateDict {
    let mut rng = init_rng(seed);
    let mut sd = StateDict::new();
    let mut put = |name: String, shape: &[usize], v: Vec<f32>| {
        sd.insert(name, Tensor::from_vec(shape, v).unwrap());
    };
    let mut all = vec![];
    visit(&spec.layers, &mut all);
    for l in all {
        let n = l.name();
        match l {
            LayerSpec::Conv2d(s) => {
                let fan = s.in_channels * s.kernel * s.kernel;
                let b = 1.0 / (fan as f32).sqrt();
                let shape = [s.out_channels, s.in_channels, s.kernel, s.kernel];
                put(
                    format!("{n}.weight"),
                    &shape,
                    uniform(&mut rng, shape.iter().product(), b),
                );
                if s.bias {
                    put(
                        format!("{n}.bias"),
                        &[s.out_channels],
                        uniform(&mut rng, s.out_channels, b),
                    );
                }
            }
            LayerSpec::Linear(s) => {
                // 4× PyTorch's bound: a hidden spiking linear layer without BN must reach θ.
                let b = 4.0 / (s.in_features as f32).sqrt();
                let shape = [s.out_features, s.in_features];
                put(
                    format!("{n}.weight"),
                    &shape,
                    uniform(&mut rng, s.in_features * s.out_features, b),
                );
                if s.bias {
                    put(
                        format!("{n}.bias"),
                        &[s.out_features],
                        uniform(&mut rng, s.out_features, b),
                    );
                }
            }
            LayerSpec::Batchnorm2d(s) => {
                let c = s.num_features;
                put(
                    format!("{n}.gamma"),
                    &[c],
                    uniform(&mut rng, c, 0.3).iter().map(|v| v + 1.0).collect(),
                );
                put(
                    format!("{n}.beta"),
                    &[c],
                    uniform(&mut rng, c, 0.3).iter().map(|v| v + 0.3).collect(),
                );
                put(format!("{n}.running_mean"), &[c], vec![0.0; c]);
                put(format!("{n}.running_var"), &[c], vec![1.0; c]);
            }
            LayerSpec::Lif(_) => {
                let theta = 1.0 + uniform(&mut rng, 1, 0.4)[0];
                let tau = 2.2 + uniform(&mut rng, 1, 0.8)[0];
                put(format!("{n}.k"), &[1], vec![(theta.exp() - 1.0).ln()]);
                put(format!("{n}.w"), &[1], vec![-(tau - 1.0f32).ln()]);
                put(format!("{n}.mu"), &[1], vec![0.0]);
            }
            _ => {}
        }
    }
    let frames = if spec.encoding == mpsnn::nn::Encoding::Frames {
        t
    } else {
        1
    };
    let batch = calib.len() / spec.input.iter().product::<usize>() / frames;
    reference::calibrate(spec, &mut sd, calib, batch, t).unwrap();
    sd
}

/// Fits the final linear layer by ridge regression on one-hot targets over the network's
/// mean-over-T features of `x`, so a random-feature network classifies for real (decisive
/// margins make the f32/int8 comparisons meaningful).
pub fn fit_head(spec: &ModelSpec, sd: &mut StateDict, x: &[f32], labels: &[usize], t: usize) {
    let Some(LayerSpec::Linear(fc)) = spec.layers.last() else {
        panic!("fit_head needs a final linear layer")
    };
    let mut trunc = spec.clone();
    trunc.layers.pop();
    trunc.classes = fc.in_features;
    let n = labels.len();
    let feats = reference::evaluate(&trunc, sd, x, n, t).unwrap();
    let d = fc.in_features + 1;
    let k = fc.out_features;
    let row = |i: usize| {
        feats[i * (d - 1)..(i + 1) * (d - 1)]
            .iter()
            .copied()
            .chain([1.0])
    };
    let mut a = vec![0.0f64; d * d];
    let mut b = vec![0.0f64; d * k];
    for i in 0..n {
        let r: Vec<f64> = row(i).collect();
        for p in 0..d {
            for q in 0..d {
                a[p * d + q] += r[p] * r[q];
            }
            b[p * k + labels[i]] += r[p];
        }
    }
    let ridge = 1e-2 * (0..d).map(|p| a[p * d + p]).sum::<f64>() / d as f64 + 1e-9;
    for p in 0..d {
        a[p * d + p] += ridge;
    }
    // Gaussian elimination with partial pivoting on [A | B].
    for col in 0..d {
        let piv = (col..d)
            .max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))
            .unwrap();
        for c in 0..d {
            a.swap(col * d + c, piv * d + c);
        }
        for c in 0..k {
            b.swap(col * k + c, piv * k + c);
        }
        let diag = a[col * d + col];
        for r in 0..d {
            if r != col {
                let f = a[r * d + col] / diag;
                if f != 0.0 {
                    for c in col..d {
                        a[r * d + c] -= f * a[col * d + c];
                    }
                    for c in 0..k {
                        b[r * k + c] -= f * b[col * k + c];
                    }
                }
            }
        }
    }
    let sol: Vec<f64> = (0..d * k).map(|i| b[i] / a[(i / k) * d + i / k]).collect();
    // The logits' scale is arbitrary under argmax; ×4 keeps them O(1) like a trained head.
    let sol = &sol;
    let w: Vec<f32> = (0..k)
        .flat_map(|o| (0..d - 1).map(move |p| (sol[p * k + o] * 4.0) as f32))
        .collect();
    let bias: Vec<f32> = (0..k)
        .map(|o| (sol[(d - 1) * k + o] * 4.0) as f32)
        .collect();
    sd.insert(
        format!("{}.weight", fc.name),
        Tensor::from_vec(&[k, d - 1], w).unwrap(),
    );
    sd.insert(
        format!("{}.bias", fc.name),
        Tensor::from_vec(&[k], bias).unwrap(),
    );
}

/// A spec's random state with BN/μ calibrated and the head fitted on `n_train` MNIST training
/// images; returns the state.
pub fn trained_like(spec: &ModelSpec, seed: u64, n_train: usize, t: usize) -> StateDict {
    let (px, labels) = mnist(true, n_train);
    let x = normalize(&px);
    let calib = &x[..x.len().min(200 * 784)];
    let mut sd = random_state(spec, seed, calib, t);
    fit_head(spec, &mut sd, &x, &labels, t);
    sd
}

/// An event-frame network for N-MNIST (`encoding: frames`, input `[2, 34, 34]`).
pub fn nmnist_cnn() -> ModelSpec {
    ModelSpec {
        name: "nmnist-test".into(),
        input: vec![2, 34, 34],
        classes: 10,
        encoding: mpsnn::nn::Encoding::Frames,
        layers: layers(
            r#"[
            {"type": "conv2d", "name": "c1", "in_channels": 2, "out_channels": 8, "kernel": 3, "stride": 2, "padding": 1},
            {"type": "batchnorm2d", "name": "n1", "num_features": 8},
            {"type": "lif", "name": "l1"},
            {"type": "maxpool2d", "name": "p1", "kernel": 2},
            {"type": "flatten", "name": "flat"},
            {"type": "linear", "name": "fc", "in_features": 512, "out_features": 10}
        ]"#,
        ),
    }
}

/// Like [`trained_like`] for [`nmnist_cnn`] on the N-MNIST training samples.
pub fn trained_like_frames(spec: &ModelSpec, seed: u64, t: usize) -> StateDict {
    let (x, labels) = nmnist(Split::Train, 1000, t);
    let tm = frames_time_major(&x, labels.len(), t);
    let mut sd = random_state(spec, seed, &tm, t);
    fit_head(spec, &mut sd, &tm, &labels, t);
    sd
}
