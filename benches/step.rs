//! Whole training steps (forward + backward + SGD update) and inference passes, on synthetic
//! inputs like `mpsnn bench` and the PyTorch reference (`scripts/bench_vs_torch.sh` compares
//! the two). Throughput is images per second.
//!
//! ResNet-19 runs at B = 8 here to keep a criterion run short; `mpsnn bench --model resnet19`
//! measures the B = 64 step of the comparison table.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --bench step -- --warm-up-time 1 --measurement-time 3
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::{ForwardCtx, Network};
use mpsnn::train::optim::OptimizerConfig;
use mpsnn::train::trainer::{TrainConfig, Trainer};
use mpsnn::train::Loss;
use mpsnn::Tensor;
use std::hint::black_box;

const T: usize = 4;

fn trainer(model: &str, input: [usize; 3], batch: usize) -> Trainer {
    let spec = build(model, &ModelOptions::new(input, 10)).unwrap();
    let config = TrainConfig {
        timesteps: T,
        epochs: 1,
        batch_size: batch,
        lr: 0.1,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        },
        loss: Loss::MeanCe,
        seed: 0,
    };
    Trainer::new(Network::new(spec, 0).unwrap(), config)
}

fn synthetic(batch: usize, input: [usize; 3]) -> (Tensor, Vec<usize>) {
    let n = batch * input.iter().product::<usize>();
    let x = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 8) as f32 / (1 << 24) as f32)
        .collect();
    let x = Tensor::from_vec(&[batch, input[0], input[1], input[2]], x).unwrap();
    (x, (0..batch).map(|i| i % 10).collect())
}

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    for (model, input, batch) in [
        ("mnist-cnn", [1, 28, 28], 64),
        ("vgg-small", [3, 32, 32], 16),
        ("resnet19", [3, 32, 32], 8),
    ] {
        let mut tr = trainer(model, input, batch);
        let (x, labels) = synthetic(batch, input);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("train_{model}_T{T}_B{batch}"), |b| {
            b.iter(|| tr.step(black_box(x.clone()), &labels, 0.1, 0, 0).unwrap())
        });
        group.bench_function(format!("infer_{model}_T{T}_B{batch}"), |b| {
            b.iter(|| {
                tr.net
                    .forward(black_box(x.clone()), &ForwardCtx::eval(T))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
