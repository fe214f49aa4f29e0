//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use mpsnn::data::Augmentation;
use mpsnn::nn::spec::{LifSpec, Reset, SurrogateKind, SurrogateShape};
use std::path::PathBuf;

/// Spiking neural networks on CPUs and microcontrollers (MP-Init + TrSG).
#[derive(Parser)]
#[command(name = "mpsnn", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Train a model on a dataset, evaluating and checkpointing after every epoch.
    Train(TrainArgs),
    /// Evaluate a checkpoint; prints {"accuracy", "accuracy_per_timestep", "n"} as JSON.
    Eval(EvalArgs),
    /// Fold and write a checkpoint as an mpsnn-micro blob for microcontrollers.
    Export(ExportArgs),
    /// Run an exported blob with the no_std runtime over a test set; prints JSON.
    Infer(InferArgs),
    /// Measure training-step or inference throughput on synthetic data; prints JSON.
    Bench(BenchArgs),
    /// Download or list datasets.
    Data {
        /// What to do with data.
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train a grid of ablation runs (paper §7.3, §7.5, §4) and write tables and plots.
    Ablate(crate::ablate::AblateArgs),
    /// Draw the figures (PNG) of a run folder or a grid folder.
    Plot(crate::plot::PlotArgs),
    /// The quick end-to-end demo: fetch MNIST, train mnist-cnn, evaluate per timestep, export,
    /// and run the exported model with the micro runtime.
    Demo(DemoArgs),
}

/// `mpsnn data ...`
#[derive(Subcommand)]
pub enum DataCommand {
    /// Obtain a dataset into the data folder (canonical URLs, then package routes).
    Fetch {
        /// Dataset name (see `mpsnn data list`).
        name: String,
        /// Data folder (default: $MPSNN_DATA, else the cache folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List datasets and whether each is present.
    List {
        /// Data folder (default: $MPSNN_DATA, else the cache folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Surrogate family.
#[derive(Clone, Copy, ValueEnum)]
pub enum SurrogateArg {
    /// Threshold-robust (the paper's).
    Trsg,
    /// Absolute scale.
    As,
    /// Relative scale.
    Rs,
}

/// Surrogate shape.
#[derive(Clone, Copy, ValueEnum)]
pub enum ShapeArg {
    /// Rectangle.
    Rect,
    /// Triangle.
    Tri,
    /// Arctangent.
    Atan,
    /// Sigmoid derivative.
    Sigmoid,
}

/// Reset rule.
#[derive(Clone, Copy, ValueEnum)]
pub enum ResetArg {
    /// U = M − θS.
    Soft,
    /// U = M(1 − S).
    Hard,
}

/// Benchmark mode.
#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Forward + backward + SGD update.
    Train,
    /// Eval-mode forward.
    Infer,
}

/// Optimizer.
#[derive(Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    /// SGD with momentum (the paper's).
    Sgd,
    /// AdamW.
    Adamw,
}

/// Training-set augmentation.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AugmentArg {
    /// The dataset's default: crop + flip for CIFAR, none for digits and events.
    Auto,
    /// None.
    Off,
    /// Random crop with 4-pixel zero padding + horizontal flip (the CIFAR recipe).
    CropFlip,
    /// Random shift by up to ±2 pixels, no flip (for digits).
    Shift,
}

impl AugmentArg {
    /// The loader setting (`None` = the dataset's default).
    pub fn augmentation(self) -> Option<Augmentation> {
        match self {
            AugmentArg::Auto => None,
            AugmentArg::Off => Some(Augmentation::Off),
            AugmentArg::CropFlip => Some(Augmentation::CropFlip),
            AugmentArg::Shift => Some(Augmentation::Shift),
        }
    }

    /// The name the CLI accepts.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// Loss.
#[derive(Clone, Copy, ValueEnum)]
pub enum LossArg {
    /// Cross-entropy of the mean-over-T logits (the paper's).
    MeanCe,
    /// Temporal efficient training.
    Tet,
}

/// Neuron options shared by `train` and `demo`.
#[derive(Args, Clone)]
pub struct NeuronArgs {
    /// Surrogate gradient family.
    #[arg(long, value_enum, default_value = "trsg")]
    pub surrogate: SurrogateArg,
    /// Surrogate shape.
    #[arg(long, value_enum, default_value = "rect")]
    pub shape: ShapeArg,
    /// Surrogate width γ.
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f32,
    /// Membrane reset after a spike.
    #[arg(long, value_enum, default_value = "soft")]
    pub reset: ResetArg,
    /// Turn MP-Init off (U[0] = 0).
    #[arg(long)]
    pub no_mp_init: bool,
    /// Keep every threshold θ at θ0.
    #[arg(long)]
    pub freeze_theta: bool,
    /// Keep every time constant τ at τ0.
    #[arg(long)]
    pub freeze_tau: bool,
    /// Initial threshold θ0.
    #[arg(long, default_value_t = 1.0)]
    pub theta0: f32,
    /// Initial time constant τ0 (> 1).
    #[arg(long, default_value_t = 2.0)]
    pub tau0: f32,
}

impl NeuronArgs {
    /// The paper's neuron: TrSG, rectangle, γ = 1, soft reset, MP-Init, learnable θ0 = 1, τ0 = 2.
    pub fn defaults() -> Self {
        NeuronArgs {
            surrogate: SurrogateArg::Trsg,
            shape: ShapeArg::Rect,
            gamma: 1.0,
            reset: ResetArg::Soft,
            no_mp_init: false,
            freeze_theta: false,
            freeze_tau: false,
            theta0: 1.0,
            tau0: 2.0,
        }
    }

    /// The LIF template every neuron layer copies.
    pub fn lif(&self) -> LifSpec {
        let mut lif = LifSpec::new("lif");
        lif.surrogate = match self.surrogate {
            SurrogateArg::Trsg => SurrogateKind::Trsg,
            SurrogateArg::As => SurrogateKind::As,
            SurrogateArg::Rs => SurrogateKind::Rs,
        };
        lif.shape = match self.shape {
            ShapeArg::Rect => SurrogateShape::Rect,
            ShapeArg::Tri => SurrogateShape::Tri,
            ShapeArg::Atan => SurrogateShape::Atan,
            ShapeArg::Sigmoid => SurrogateShape::Sigmoid,
        };
        lif.reset = match self.reset {
            ResetArg::Soft => Reset::Soft,
            ResetArg::Hard => Reset::Hard,
        };
        lif.gamma = self.gamma;
        lif.mp_init = !self.no_mp_init;
        lif.learn_theta = !self.freeze_theta;
        lif.learn_tau = !self.freeze_tau;
        lif.theta0 = self.theta0;
        lif.tau0 = self.tau0;
        lif
    }
}

/// `mpsnn train`
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Dataset: mnist, fashion-mnist, cifar10, cifar100, nmnist.
    #[arg(long)]
    pub dataset: String,
    /// Built-in model (mnist-cnn, vgg-small, resnet19, resnet34, cnn7-dvs) or a spec JSON file.
    #[arg(long)]
    pub model: String,
    /// Timesteps T.
    #[arg(long, short = 'T', default_value_t = 4)]
    pub timesteps: usize,
    /// Epochs (the cosine schedule reaches 0 after the last).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f32,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerArg,
    /// Weight decay (SGD: L2 on every parameter; AdamW: decoupled).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f32,
    /// Loss function.
    #[arg(long, value_enum, default_value = "mean-ce")]
    pub loss: LossArg,
    /// TET's MSE regularizer weight λ.
    #[arg(long, default_value_t = 0.0)]
    pub tet_lambda: f32,
    /// Dropout probability before every fully connected layer of a built-in model (one mask per
    /// sample shared by all timesteps; identity in eval and in exported blobs). Default: 0.25
    /// for mnist-cnn, 0 for the others.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Neuron options.
    #[command(flatten)]
    pub neuron: NeuronArgs,
    /// Training-set augmentation (a resumed run keeps the one it started with).
    #[arg(long, value_enum, default_value = "auto")]
    pub augment: AugmentArg,
    /// Seed of initialization, data order, augmentation and dropout.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Data folder (default: $MPSNN_DATA, else the cache folder).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run folder: checkpoints, metrics.jsonl, summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint (--epochs may extend it).
    #[arg(long)]
    pub resume: bool,
    /// Stop once this many epochs are done (the schedule still spans --epochs); continue later
    /// with --resume.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Data-parallel runs (`mpirun -np N`, built with `--features mpi`): BatchNorm statistics
    /// over the global batch of all ranks instead of each rank's own batch. A single process
    /// already normalizes over its whole batch, so there it changes nothing.
    #[arg(long)]
    pub sync_bn: bool,
    /// Every rank writes its final parameters and buffers to DIR/rank<r>.ckpt (to compare the
    /// replicas of a data-parallel run).
    #[arg(long, value_name = "DIR")]
    pub replica_dump: Option<PathBuf>,
}

/// `mpsnn eval`
#[derive(Args)]
pub struct EvalArgs {
    /// Checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset.
    #[arg(long)]
    pub dataset: String,
    /// Timesteps (default: the training run's).
    #[arg(long, short = 'T')]
    pub timesteps: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Data folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `mpsnn export`
#[derive(Args)]
pub struct ExportArgs {
    /// Checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output blob.
    #[arg(long)]
    pub out: PathBuf,
    /// Quantize weights to int8 (per output channel).
    #[arg(long)]
    pub int8: bool,
    /// Timesteps stored in the blob (default: the training run's).
    #[arg(long, short = 'T')]
    pub timesteps: Option<usize>,
    /// Dataset whose input normalization the blob stores (default: the one the checkpoint
    /// was trained on).
    #[arg(long)]
    pub dataset: Option<String>,
}

/// `mpsnn infer`
#[derive(Args)]
pub struct InferArgs {
    /// Exported blob.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset.
    #[arg(long)]
    pub dataset: String,
    /// Checkpoint to compare against (`mpsnn eval` predictions); default: none.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Run on the first N test samples only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Data folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `mpsnn bench`
#[derive(Args)]
pub struct BenchArgs {
    /// Built-in model or spec file.
    #[arg(long)]
    pub model: String,
    /// Timesteps T.
    #[arg(long, short = 'T', default_value_t = 4)]
    pub timesteps: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Train step or inference.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: ModeArg,
    /// Warm-up iterations.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Input shape C,H,W (default: the model's natural input).
    #[arg(long, value_delimiter = ',')]
    pub input: Option<Vec<usize>>,
    /// Classes.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// What training rebuilds in backward instead of keeping: `full` (LIF tapes and the
    /// inputs of batch norms after spike convs), `pointwise` (LIF tapes and the inputs of batch
    /// norms after 1×1 spike convs, the default), `lif` (LIF tapes only) or `off`; results
    /// are bit-identical, memory and time differ.
    #[arg(long, value_enum, default_value = "pointwise")]
    pub recompute: RecomputeArg,
}

/// Recomputation level of `mpsnn bench` (`mpsnn::nn::sequential::Recompute`).
#[derive(Clone, Copy, ValueEnum)]
pub enum RecomputeArg {
    /// Keep everything.
    Off,
    /// Rebuild LIF inputs only.
    Lif,
    /// Rebuild LIF inputs and batch-norm inputs after 1×1 spike convs.
    Pointwise,
    /// Rebuild LIF inputs and batch-norm inputs after spike convs.
    Full,
}

/// `mpsnn demo`
#[derive(Args)]
pub struct DemoArgs {
    /// Run folder.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Train on the first N training samples only (default: all 60,000).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Data folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}
