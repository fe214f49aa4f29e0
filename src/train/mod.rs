//! Training: losses, optimizers, the LR schedule, the trainer loop and checkpoints.

pub mod bench;
pub mod checkpoint;
pub mod data_parallel;
pub mod loss;
pub mod optim;
pub mod record;
pub mod run;
pub mod trainer;

pub use checkpoint::Checkpoint;
pub use loss::Loss;
pub use optim::{cosine_lr, Optimizer, OptimizerConfig};
pub use trainer::{evaluate, EvalStats, TrainConfig, Trainer};
