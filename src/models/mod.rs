//! Built-in models, generated as [`ModelSpec`]s (models are data: every built-in can be written
//! out with `serde_json` and edited, and `--model path/to/spec.json` loads such a file).
//!
//! | name | structure | source |
//! |---|---|---|
//! | `mnist-cnn` | conv 1→32, BN, LIF, maxpool 2, conv 32→64, BN, LIF, maxpool 2, linear → classes | issue spec |
//! | `vgg-small` | (conv-BN-LIF)×2 per stage at 64/128/256 channels, maxpool after each stage, linear | issue spec |
//! | `resnet19` | METHOD.md §6.1 (17 LIF layers) | authors' `resnet19.py` |
//! | `resnet34` | METHOD.md §6.2 (33 LIF layers) | authors' `spiking_resnet.py` |
//! | `cnn7-dvs` | `64C3-AP2-128C3-128C3-AP2-256C3-256C3-AP2-1024FC-classes FC` (§6.3) | paper supplement |
//!
//! Every LIF layer is a copy of one template [`LifSpec`] (surrogate, shape, reset, θ0, τ0, ...),
//! so the paper's ablations change one struct. Direct-encoded models place a `repeat` layer right
//! after the stem's BatchNorm: the stem conv + BN run once per image, not once per timestep.
//!
//! ```
//! use mpsnn::models::{build, ModelOptions};
//! let spec = build("mnist-cnn", &ModelOptions::new([1, 28, 28], 10)).unwrap();
//! assert_eq!(spec.classes, 10);
//! ```

pub mod cost;

use crate::error::{Error, Result};
use crate::nn::spec::{
    BatchNorm2dSpec, Conv2dSpec, DropoutSpec, Encoding, LayerSpec, LifSpec, LinearSpec, ModelSpec,
    NamedSpec, PoolSpec, ResidualSpec,
};

/// The built-in model names.
pub const MODEL_NAMES: &[&str] = &["mnist-cnn", "vgg-small", "resnet19", "resnet34", "cnn7-dvs"];

/// The dropout probability `mpsnn train` puts before the fully connected layers of built-in
/// model `name` unless told otherwise: 0.25 for `mnist-cnn`, whose 3,136 spike features
/// otherwise let it memorize MNIST (train 99.95 %, test plateau 99.1–99.2 %; the paper places
/// dropout before each FC), 0 for the others (the authors' ResNet-19 has none).
pub fn default_dropout(name: &str) -> f32 {
    match name {
        "mnist-cnn" => 0.25,
        _ => 0.0,
    }
}

/// What a built-in model is built for.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Per-sample input `[C, H, W]`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Direct (static images) or frames (event data).
    pub encoding: Encoding,
    /// The LIF configuration every neuron layer copies (its `name` is replaced).
    pub lif: LifSpec,
    /// Dropout probability before every fully connected layer (0 = none).
    pub dropout: f32,
}

impl ModelOptions {
    /// Direct encoding, the paper's default LIF, no dropout.
    pub fn new(input: [usize; 3], classes: usize) -> Self {
        ModelOptions {
            input,
            classes,
            encoding: Encoding::Direct,
            lif: LifSpec::new("lif"),
            dropout: 0.0,
        }
    }
}

/// Builds the built-in model `name` (one of [`MODEL_NAMES`]).
pub fn build(name: &str, opts: &ModelOptions) -> Result<ModelSpec> {
    let mut b = Builder::new(opts);
    match name {
        "mnist-cnn" => mnist_cnn(&mut b),
        "vgg-small" => vgg_small(&mut b),
        "resnet19" => resnet19(&mut b),
        "resnet34" => resnet34(&mut b),
        "cnn7-dvs" => cnn7_dvs(&mut b)?,
        other => {
            return Err(Error::Spec(format!(
                "unknown model {other:?}; built-in models: {}",
                MODEL_NAMES.join(", ")
            )))
        }
    }
    let spec = ModelSpec {
        name: name.to_string(),
        input: opts.input.to_vec(),
        classes: opts.classes,
        encoding: opts.encoding,
        layers: b.layers,
    };
    Ok(spec)
}

/// Appends layers while tracking the running `[C, H, W]` shape, so heads size themselves.
struct Builder<'a> {
    opts: &'a ModelOptions,
    layers: Vec<LayerSpec>,
    shape: [usize; 3],
    lif_count: usize,
}

impl<'a> Builder<'a> {
    fn new(opts: &'a ModelOptions) -> Self {
        Builder {
            opts,
            layers: Vec::new(),
            shape: opts.input,
            lif_count: 0,
        }
    }

    fn conv_spec(
        &mut self,
        name: &str,
        out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> LayerSpec {
        let [c, h, w] = self.shape;
        self.shape = [
            out,
            (h + 2 * pad - kernel) / stride + 1,
            (w + 2 * pad - kernel) / stride + 1,
        ];
        LayerSpec::Conv2d(Conv2dSpec {
            name: name.to_string(),
            in_channels: c,
            out_channels: out,
            kernel,
            stride,
            padding: pad,
            bias: false,
        })
    }

    fn bn_spec(&self, name: &str) -> LayerSpec {
        LayerSpec::Batchnorm2d(BatchNorm2dSpec {
            name: name.to_string(),
            num_features: self.shape[0],
            eps: 1e-5,
            momentum: 0.1,
            training: None,
        })
    }

    fn lif_spec(&mut self, name: &str) -> LayerSpec {
        self.lif_count += 1;
        let mut lif = self.opts.lif.clone();
        lif.name = name.to_string();
        LayerSpec::Lif(lif)
    }

    /// conv → BN (no neuron).
    fn conv_bn(
        &mut self,
        name: &str,
        out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Vec<LayerSpec> {
        let conv = self.conv_spec(&format!("{name}_conv"), out, kernel, stride, pad);
        vec![conv, self.bn_spec(&format!("{name}_bn"))]
    }

    /// The stem: conv → BN → (repeat, for direct encoding) → LIF.
    fn stem(&mut self, out: usize, kernel: usize, stride: usize, pad: usize) {
        let layers = self.conv_bn("stem", out, kernel, stride, pad);
        self.layers.extend(layers);
        if self.opts.encoding == Encoding::Direct {
            self.layers.push(LayerSpec::Repeat(NamedSpec {
                name: "repeat".into(),
            }));
        }
        let lif = self.lif_spec("stem_lif");
        self.layers.push(lif);
    }

    /// conv → BN → LIF.
    fn conv_bn_lif(&mut self, name: &str, out: usize) {
        let layers = self.conv_bn(name, out, 3, 1, 1);
        self.layers.extend(layers);
        let lif = self.lif_spec(&format!("{name}_lif"));
        self.layers.push(lif);
    }

    fn pool(&mut self, name: &str, max: bool, kernel: usize, stride: usize, pad: usize) {
        let [c, h, w] = self.shape;
        self.shape = [
            c,
            (h + 2 * pad - kernel) / stride + 1,
            (w + 2 * pad - kernel) / stride + 1,
        ];
        let spec = PoolSpec {
            name: name.to_string(),
            kernel,
            stride: Some(stride),
            padding: pad,
        };
        self.layers.push(if max {
            LayerSpec::Maxpool2d(spec)
        } else {
            LayerSpec::Avgpool2d(spec)
        });
    }

    fn global_avgpool_flatten(&mut self) {
        self.layers.push(LayerSpec::GlobalAvgpool2d(NamedSpec {
            name: "avgpool".into(),
        }));
        self.shape = [self.shape[0], 1, 1];
        self.flatten();
    }

    fn flatten(&mut self) {
        self.layers.push(LayerSpec::Flatten(NamedSpec {
            name: "flatten".into(),
        }));
    }

    fn features(&self) -> usize {
        self.shape.iter().product()
    }

    fn linear(&mut self, name: &str, in_features: usize, out: usize) {
        if self.opts.dropout > 0.0 {
            self.layers.push(LayerSpec::Dropout(DropoutSpec {
                name: format!("{name}_dropout"),
                p: self.opts.dropout,
            }));
        }
        self.layers.push(LayerSpec::Linear(LinearSpec {
            name: name.to_string(),
            in_features,
            out_features: out,
            bias: true,
        }));
    }

    /// A ResNet BasicBlock: `LIF(BN(conv(LIF(BN(conv(x))))) + shortcut(x))`, shortcut = identity
    /// or 1×1-conv + BN when the shape changes.
    fn basic_block(&mut self, name: &str, out: usize, stride: usize) {
        let input = self.shape;
        let mut body = self.conv_bn(&format!("{name}_1"), out, 3, stride, 1);
        body.push(self.lif_spec(&format!("{name}_1_lif")));
        body.extend(self.conv_bn(&format!("{name}_2"), out, 3, 1, 1));
        let shortcut = if stride != 1 || input[0] != out {
            let after = self.shape;
            self.shape = input;
            let sc = self.conv_bn(&format!("{name}_sc"), out, 1, stride, 0);
            debug_assert_eq!(self.shape, after);
            sc
        } else {
            Vec::new()
        };
        self.layers.push(LayerSpec::Residual(ResidualSpec {
            name: name.to_string(),
            body,
            shortcut,
        }));
        let lif = self.lif_spec(&format!("{name}_lif"));
        self.layers.push(lif);
    }
}

fn mnist_cnn(b: &mut Builder) {
    b.stem(32, 3, 1, 1);
    b.pool("pool1", true, 2, 2, 0);
    b.conv_bn_lif("conv2", 64);
    b.pool("pool2", true, 2, 2, 0);
    b.flatten();
    let f = b.features();
    b.linear("fc", f, b.opts.classes);
}

fn vgg_small(b: &mut Builder) {
    b.stem(64, 3, 1, 1);
    b.conv_bn_lif("conv2", 64);
    b.pool("pool1", true, 2, 2, 0);
    b.conv_bn_lif("conv3", 128);
    b.conv_bn_lif("conv4", 128);
    b.pool("pool2", true, 2, 2, 0);
    b.conv_bn_lif("conv5", 256);
    b.conv_bn_lif("conv6", 256);
    b.pool("pool3", true, 2, 2, 0);
    b.flatten();
    let f = b.features();
    b.linear("fc", f, b.opts.classes);
}

/// METHOD.md §6.1: stem 3→64, layer1 3×Basic(128), layer2 3×Basic(256, s2), layer3 2×Basic(512, s2).
fn resnet19(b: &mut Builder) {
    b.stem(64, 3, 1, 1);
    for (stage, (blocks, width, stride)) in [(3, 128, 1), (3, 256, 2), (2, 512, 2)]
        .into_iter()
        .enumerate()
    {
        for i in 0..blocks {
            b.basic_block(
                &format!("layer{}_{}", stage + 1, i),
                width,
                if i == 0 { stride } else { 1 },
            );
        }
    }
    b.global_avgpool_flatten();
    let f = b.features();
    b.linear("fc", f, b.opts.classes);
}

/// METHOD.md §6.2: stem 7×7/2 → maxpool 3/2, stages [3, 4, 6, 3] at 64/128/256/512.
fn resnet34(b: &mut Builder) {
    b.stem(64, 7, 2, 3);
    b.pool("stem_pool", true, 3, 2, 1);
    for (stage, (blocks, width)) in [(3, 64), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for i in 0..blocks {
            let stride = if i == 0 && stage > 0 { 2 } else { 1 };
            b.basic_block(&format!("layer{}_{}", stage + 1, i), width, stride);
        }
    }
    b.global_avgpool_flatten();
    let f = b.features();
    b.linear("fc", f, b.opts.classes);
}

/// §6.3: `64C3-AP2-128C3-128C3-AP2-256C3-256C3-AP2-1024FC-classes FC`, each conv followed by BN
/// and LIF, the 1024 FC by LIF, dropout before each FC when enabled.
fn cnn7_dvs(b: &mut Builder) -> Result<()> {
    b.stem(64, 3, 1, 1);
    b.pool("pool1", false, 2, 2, 0);
    b.conv_bn_lif("conv2", 128);
    b.conv_bn_lif("conv3", 128);
    b.pool("pool2", false, 2, 2, 0);
    b.conv_bn_lif("conv4", 256);
    b.conv_bn_lif("conv5", 256);
    b.pool("pool3", false, 2, 2, 0);
    if b.shape[1] == 0 || b.shape[2] == 0 {
        return Err(Error::Spec(format!(
            "cnn7-dvs needs an input of at least 8×8, got {:?}",
            b.opts.input
        )));
    }
    b.flatten();
    let f = b.features();
    b.linear("fc1", f, 1024);
    let lif = b.lif_spec("fc1_lif");
    b.layers.push(lif);
    b.linear("fc2", 1024, b.opts.classes);
    Ok(())
}

/// Number of LIF layers in a spec (at any depth).
pub fn count_lif(layers: &[LayerSpec]) -> usize {
    layers
        .iter()
        .map(|l| match l {
            LayerSpec::Lif(_) => 1,
            LayerSpec::Residual(r) => count_lif(&r.body) + count_lif(&r.shortcut),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lif_counts_match_the_paper() {
        let cifar = ModelOptions::new([3, 32, 32], 10);
        assert_eq!(count_lif(&build("resnet19", &cifar).unwrap().layers), 17);
        let imagenet = ModelOptions::new([3, 224, 224], 1000);
        assert_eq!(count_lif(&build("resnet34", &imagenet).unwrap().layers), 33);
        assert_eq!(count_lif(&build("vgg-small", &cifar).unwrap().layers), 6);
        let digits = ModelOptions::new([1, 28, 28], 10);
        assert_eq!(count_lif(&build("mnist-cnn", &digits).unwrap().layers), 2);
    }

    #[test]
    fn heads_size_themselves() {
        let find_fc = |spec: &ModelSpec, name: &str| {
            spec.layers
                .iter()
                .find_map(|l| match l {
                    LayerSpec::Linear(s) if s.name == name => Some(s.in_features),
                    _ => None,
                })
                .unwrap()
        };
        let digits = ModelOptions::new([1, 28, 28], 10);
        assert_eq!(
            find_fc(&build("mnist-cnn", &digits).unwrap(), "fc"),
            64 * 7 * 7
        );
        let cifar = ModelOptions::new([3, 32, 32], 100);
        assert_eq!(
            find_fc(&build("vgg-small", &cifar).unwrap(), "fc"),
            256 * 4 * 4
        );
        assert_eq!(find_fc(&build("resnet19", &cifar).unwrap(), "fc"), 512);
        let mut dvs = ModelOptions::new([2, 48, 48], 10);
        dvs.encoding = Encoding::Frames;
        assert_eq!(
            find_fc(&build("cnn7-dvs", &dvs).unwrap(), "fc1"),
            256 * 6 * 6
        );
        dvs.input = [2, 34, 34];
        assert_eq!(
            find_fc(&build("cnn7-dvs", &dvs).unwrap(), "fc1"),
            256 * 4 * 4
        );
    }

    #[test]
    fn frames_models_have_no_repeat_and_unknown_names_fail() {
        let mut dvs = ModelOptions::new([2, 34, 34], 10);
        dvs.encoding = Encoding::Frames;
        let spec = build("mnist-cnn", &dvs).unwrap();
        assert!(!spec
            .layers
            .iter()
            .any(|l| matches!(l, LayerSpec::Repeat(_))));
        assert!(build("resnet18", &dvs).is_err());
    }

    #[test]
    fn specs_round_trip_through_json() {
        let spec = build("resnet19", &ModelOptions::new([3, 32, 32], 10)).unwrap();
        let text = serde_json::to_string_pretty(&spec).unwrap();
        let back: ModelSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }
}
