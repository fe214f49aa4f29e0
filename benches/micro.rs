//! Host inference time per sample of an exported `mnist-cnn`-shaped model (conv16-pool-conv32-
//! pool-fc, T = 4, random convolutions with BN statistics and μ calibrated on MNIST so layers
//! are active) with the `mpsnn-micro` runtime, f32 and int8, single-threaded, on real MNIST test
//! images; and the std network's eval forward on one image as the reference for the ratio.
//! Reads `$MPSNN_DATA` (default `../shared/data`).
//!
//! `cargo bench --bench micro -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/export_support/mod.rs"]
mod export_support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use export_support::{mnist, mnist_cnn, normalize, random_state};
use mpsnn::export::{export_model, ExportOptions};
use mpsnn::nn::{ForwardCtx, LayerSpec, Network};
use mpsnn::Tensor;
use mpsnn_micro::{Input, Model};
use std::hint::black_box;

const T: usize = 4;

fn bench(c: &mut Criterion) {
    let mut spec = mnist_cnn(16, 32);
    spec.layers.retain(|l| !matches!(l, LayerSpec::Dropout(_)));
    let (calib, _) = mnist(true, 200);
    let sd = random_state(&spec, 1, &normalize(&calib), T);
    let (px, _) = mnist(false, 64);
    let mut g = c.benchmark_group("micro_inference");
    g.throughput(Throughput::Elements(1));
    for int8 in [false, true] {
        let blob = export_model(
            &spec,
            &sd,
            T,
            &ExportOptions {
                int8,
                ..ExportOptions::mnist()
            },
        )
        .unwrap()
        .blob;
        let model = Model::parse(&blob).unwrap();
        let mut scratch = vec![0u32; model.scratch_words()];
        let mut scores = [0.0f32; 10];
        let mut i = 0;
        g.bench_function(if int8 { "micro_int8" } else { "micro_f32" }, |b| {
            b.iter(|| {
                i = (i + 1) % 64;
                let img = &px[i * 784..(i + 1) * 784];
                black_box(
                    model
                        .run(Input::U8(img), &mut scratch, &mut scores)
                        .unwrap(),
                )
            })
        });
    }
    let mut net = Network::new(spec.clone(), 0).unwrap();
    net.load_state_dict(&sd).unwrap();
    let x = normalize(&px);
    let mut i = 0;
    g.bench_function("std_eval_batch1", |b| {
        b.iter(|| {
            i = (i + 1) % 64;
            let input =
                Tensor::from_vec(&[1, 1, 28, 28], x[i * 784..(i + 1) * 784].to_vec()).unwrap();
            black_box(net.forward(input, &ForwardCtx::eval(T)).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
