//! Kernel benchmarks at the shapes that dominate training: ResNet-19 (METHOD.md §6.1, T = 4,
//! B = 16 → N = 64) and the MNIST CNN (T = 4, B = 64 → N = 256).
//!
//! Conv benches set `Throughput::Elements(FLOP)`, so criterion's **"elements/s" are FLOP/s**
//! (`2·N·C_out·C_in·k²·OH·OW` per pass; forward, input gradient and weight gradient each cost
//! that much). Compare with the machine's FP32 peak (`../shared/ref/README.md`: 279 GFLOP/s on
//! 1 thread, 543 on 2) and PyTorch's effective ~130 / 232 GFLOP/s on ResNet-19 training.
//! BN and pooling benches count elements of the activation (they are memory-bound).
//!
//! Threads: rayon's pool size, e.g. `RAYON_NUM_THREADS=1 cargo bench --bench kernels`.
//! Keep runs short on the shared machine:
//! `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use mpsnn::kernels::bn::{self, BnDims};
use mpsnn::kernels::conv::sparse::{self, SpikeBits};
use mpsnn::kernels::conv::{self, direct, ConvGeom, ConvWorkspace};
use mpsnn::kernels::gemm::{sgemm_rows_par, MatLayout};
use mpsnn::kernels::narrow;
use mpsnn::kernels::pool::{self, PoolGeom};
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    // Cheap deterministic values in [-1, 1); the kernels are value-independent.
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 23) as f32
                - 1.0
        })
        .collect()
}

/// (label, [n, c_in, h = w, c_out, kernel, stride, pad])
const CONVS: &[(&str, [usize; 7])] = &[
    ("r19_l1_128x32x32_k3", [64, 128, 32, 128, 3, 1, 1]),
    ("r19_l2_256x16x16_k3", [64, 256, 16, 256, 3, 1, 1]),
    ("r19_l3_512x8x8_k3", [64, 512, 8, 512, 3, 1, 1]),
    ("r19_short_128to256_32x32_k1s2", [64, 128, 32, 256, 1, 2, 0]),
    ("r19_stem_3to64_32x32_k3", [64, 3, 32, 64, 3, 1, 1]),
    ("mnist_c1_1to32_28x28_k3", [256, 1, 28, 32, 3, 1, 1]),
    ("mnist_c2_32to64_14x14_k3", [256, 32, 14, 64, 3, 1, 1]),
    // A wider 14×14 layer, where the direct kernels meet GEMMs with more work per call.
    ("w14_128to128_14x14_k3", [64, 128, 14, 128, 3, 1, 1]),
];

/// A conv forward that also takes its output planes' moments.
type WithMoments =
    fn(&ConvGeom, &[f32], &[f32], Option<&[f32]>, &mut [f32], &mut [bn::PlaneMoments]);

fn conv_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    // Reference point in the same run: a 1024³ SGEMM through the same path (rows split over the
    // pool). On a shared, noisy machine report conv throughput as a ratio to this.
    let m = 1024;
    let (a, b) = (data(m * m, 7), data(m * m, 8));
    let mut cm = vec![0.0; m * m];
    let l = MatLayout::row_major(m, m);
    group.throughput(Throughput::Elements(2 * (m * m * m) as u64));
    group.bench_function("sgemm_1024_reference", |bch| {
        bch.iter(|| sgemm_rows_par(1.0, black_box(&a), l, &b, l, 0.0, &mut cm, l))
    });
    for &(label, [n, ci, hw, co, k, s, p]) in CONVS {
        let g = ConvGeom::new(n, ci, hw, hw, co, k, s, p).unwrap();
        let x = data(n * g.in_img(), 1);
        let w = data(g.weight_len(), 2);
        let dy = data(n * g.out_img(), 3);
        let mut y = vec![0.0; n * g.out_img()];
        let mut dx = vec![0.0; n * g.in_img()];
        let mut dw = vec![0.0; g.weight_len()];
        let mut ws = ConvWorkspace::default();
        group.throughput(Throughput::Elements(g.flops()));
        group.bench_function(BenchmarkId::new("fwd", label), |b| {
            b.iter(|| conv::forward(&g, black_box(&x), &w, None, &mut y))
        });
        group.bench_function(BenchmarkId::new("dx", label), |b| {
            b.iter(|| conv::backward_input(&g, black_box(&dy), &w, &mut dx))
        });
        if conv::winograd::preferred(&g) {
            // The paths `dx` replaced for 3×3 "same" convs, for the ratios in the same run.
            group.bench_function(BenchmarkId::new("dx_im2col", label), |b| {
                b.iter(|| conv::backward_input_im2col(&g, black_box(&dy), &w, &mut dx))
            });
            group.bench_function(BenchmarkId::new("dx_f2x2", label), |b| {
                b.iter(|| conv::winograd::backward_input_f2x2(&g, black_box(&dy), &w, &mut dx))
            });
        }
        group.bench_function(BenchmarkId::new("dw", label), |b| {
            b.iter(|| conv::backward_weight(&g, black_box(&x), &dy, &mut dw, &mut ws))
        });
        if conv::winograd::preferred_for_weight(&g) || conv::stem::preferred(&g) {
            group.bench_function(BenchmarkId::new("dw_im2col", label), |b| {
                b.iter(|| conv::backward_weight_im2col(&g, black_box(&x), &dy, &mut dw, &mut ws))
            });
        }
        if direct::preferred(&g)
            || conv::winograd::f43::preferred(&g)
            || conv::stem_forward::applies(&g)
        {
            // The paths `fwd` replaced for 3×3 "same" convs (Winograd F(4×4) with ≥ 32
            // channels, the stem's flat taps with one input channel, else the direct kernel on
            // narrow planes), for the ratios in one run.
            group.bench_function(BenchmarkId::new("fwd_im2col", label), |b| {
                b.iter(|| conv::forward_im2col(&g, black_box(&x), &w, None, &mut y))
            });
        }
        if direct::preferred(&g) && conv::winograd::f43::preferred(&g) {
            group.bench_function(BenchmarkId::new("fwd_direct", label), |b| {
                let x = direct::Input::Dense(black_box(&x));
                b.iter(|| direct::forward(&g, x, &w, None, &mut y))
            });
        }
        if conv::stem_forward::applies(&g) && !conv::stem_forward::preferred(&g) {
            // The stem's flat taps where `fwd` does not take them (more input channels).
            group.bench_function(BenchmarkId::new("fwd_stem_taps", label), |b| {
                b.iter(|| conv::stem_forward::forward(&g, black_box(&x), &w, None, &mut y))
            });
        }
        let with_moments = if conv::winograd::f43::preferred(&g) {
            Some(conv::winograd::f43::forward_with_moments as WithMoments)
        } else if conv::stem_forward::preferred(&g) {
            Some(conv::stem_forward::forward_with_moments as WithMoments)
        } else {
            None
        };
        if let Some(forward_with_moments) = with_moments {
            // A training batch norm's statistics of the output: its own pass over the output
            // after the forward, against the moments the forward takes as it writes a plane.
            let d = BnDims {
                n,
                c: co,
                hw: g.oh * g.ow,
            };
            let (mut mean, mut var) = (vec![0.0; co], vec![0.0; co]);
            group.bench_function(BenchmarkId::new("fwd_then_bn_stats", label), |b| {
                b.iter(|| {
                    conv::forward(&g, black_box(&x), &w, None, &mut y);
                    bn::batch_stats(&y, d, &mut mean, &mut var);
                })
            });
            let mut moments = vec![bn::PlaneMoments::default(); n * co];
            group.bench_function(BenchmarkId::new("fwd_with_moments", label), |b| {
                b.iter(|| {
                    let m = &mut moments;
                    forward_with_moments(&g, black_box(&x), &w, None, &mut y, m);
                    bn::stats_from_moments(m, d, &mut mean, &mut var);
                })
            });
        }
    }
    group.finish();
}

fn bn_pool_benches(c: &mut Criterion) {
    // ResNet-19 layer 1 activation: 64 × 128 × 32 × 32 (33.5 M floats, 134 MB).
    let d = BnDims {
        n: 64,
        c: 128,
        hw: 32 * 32,
    };
    let x = data(d.len(), 4);
    let dy = data(d.len(), 5);
    let mut y = vec![0.0; d.len()];
    let (mut mean, mut var) = (vec![0.0; d.c], vec![0.0; d.c]);
    let gamma = vec![1.0; d.c];
    let beta = vec![0.0; d.c];
    let (mut dg, mut db) = (vec![0.0; d.c], vec![0.0; d.c]);

    let mut group = c.benchmark_group("bn_pool");
    group.sample_size(10);
    group.throughput(Throughput::Elements(d.len() as u64));
    group.bench_function("bn_fwd_train_64x128x32x32", |b| {
        b.iter(|| {
            bn::batch_stats(black_box(&x), d, &mut mean, &mut var);
            bn::normalize(&x, &mut y, d, &mean, &var, &beta);
        })
    });
    bn::batch_stats(&x, d, &mut mean, &mut var);
    group.bench_function("bn_bwd_64x128x32x32", |b| {
        // The kernel overwrites its gradient input; a fresh copy per run is set-up, not timed.
        b.iter_batched_ref(
            || dy.clone(),
            |g| bn::backward(&x, g, d, &mean, &var, &gamma, true, &mut dg, &mut db),
            BatchSize::LargeInput,
        )
    });
    // mnist-cnn's conv2 output (T·B = 256, 64 × 14 × 14): small planes, 784 bytes each.
    let dm = BnDims {
        n: 256,
        c: 64,
        hw: 14 * 14,
    };
    let (xm, dym) = (data(dm.len(), 6), data(dm.len(), 7));
    let mut ym = vec![0.0; dm.len()];
    let (mut mm, mut vm) = (vec![0.0; dm.c], vec![0.0; dm.c]);
    let (gm, bm) = (vec![1.0; dm.c], vec![0.0; dm.c]);
    let (mut dgm, mut dbm) = (vec![0.0; dm.c], vec![0.0; dm.c]);
    group.throughput(Throughput::Elements(dm.len() as u64));
    group.bench_function("bn_fwd_train_256x64x14x14", |b| {
        b.iter(|| {
            bn::batch_stats(black_box(&xm), dm, &mut mm, &mut vm);
            bn::normalize(&xm, &mut ym, dm, &mm, &vm, &bm);
        })
    });
    group.bench_function("bn_bwd_256x64x14x14", |b| {
        b.iter_batched_ref(
            || dym.clone(),
            |g| bn::backward(&xm, g, dm, &mm, &vm, &gm, true, &mut dgm, &mut dbm),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(d.len() as u64));
    let pg = PoolGeom::new(d.n * d.c, 32, 32, 2, 2, 0).unwrap();
    let mut py = vec![0.0; pg.planes * pg.out_plane()];
    let mut arg = vec![0u32; py.len()];
    let mut pdx = vec![0.0; x.len()];
    group.bench_function("maxpool2x2_fwd_64x128x32x32", |b| {
        b.iter(|| pool::max_forward(&pg, black_box(&x), &mut py, Some(&mut arg)))
    });
    group.bench_function("maxpool2x2_bwd_64x128x32x32", |b| {
        b.iter(|| pool::max_backward(&pg, black_box(&py), &arg, &mut pdx))
    });
    group.finish();
}

/// Spike inputs of density `p` (value 1): every `⌈1/p⌉`-th element is set, with a hashed
/// jitter so rows do not line up.
fn spikes(n: usize, p: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2654435761) >> 8;
            if (h as f64) < p * (1u32 << 24) as f64 {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// The event-driven forward and weight gradient against the dense path at several input
/// densities, on the spike-input conv shapes (the switch points in `kernels::conv::sparse`
/// come from here). Throughput is the dense-equivalent FLOP count, so the rates compare
/// directly with the dense rows of the same shape.
fn sparse_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d_sparse");
    group.sample_size(10);
    let shapes: &[(&str, [usize; 7])] = &[
        ("r19_l1_128x32x32_k3", [16, 128, 32, 128, 3, 1, 1]),
        ("r19_l2_256x16x16_k3", [32, 256, 16, 256, 3, 1, 1]),
        ("r19_l3_512x8x8_k3", [64, 512, 8, 512, 3, 1, 1]),
        ("r19_short_128to256_32x32_k1s2", [16, 128, 32, 256, 1, 2, 0]),
        ("mnist_c2_32to64_14x14_k3", [256, 32, 14, 64, 3, 1, 1]),
    ];
    for &(label, [n, ci, hw, co, k, s, p]) in shapes {
        let g = ConvGeom::new(n, ci, hw, hw, co, k, s, p).unwrap();
        let w = data(g.weight_len(), 2);
        let dy = data(n * g.out_img(), 3);
        let mut y = vec![0.0; n * g.out_img()];
        let mut dw = vec![0.0; g.weight_len()];
        let mut ws = ConvWorkspace::default();
        let wp = sparse::PackedWeight::new(&g, &w);
        group.throughput(Throughput::Elements(g.flops()));
        let x = spikes(n * g.in_img(), 0.5);
        group.bench_function(BenchmarkId::new("dense_fwd", label), |b| {
            b.iter(|| conv::forward(&g, black_box(&x), &w, None, &mut y))
        });
        group.bench_function(BenchmarkId::new("dense_dw", label), |b| {
            b.iter(|| conv::backward_weight(&g, black_box(&x), &dy, &mut dw, &mut ws))
        });
        if direct::preferred(&g) {
            // Dense from the bits themselves: the alternative to the event path here.
            let bits = SpikeBits::from_f32(&x, n, ci, hw * hw, 1.0);
            group.bench_function(BenchmarkId::new("direct_fwd_bits", label), |b| {
                b.iter(|| {
                    direct::forward(
                        &g,
                        direct::Input::Spikes(black_box(&bits)),
                        &w,
                        None,
                        &mut y,
                    )
                })
            });
        }
        for density in [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.7] {
            let x = spikes(n * g.in_img(), density);
            let bits = SpikeBits::from_f32(&x, n, ci, hw * hw, 1.0);
            let id = format!("{label}_d{density}");
            group.bench_function(BenchmarkId::new("sparse_fwd", &id), |b| {
                b.iter(|| sparse::forward(&g, black_box(&bits), &wp, None, &mut y))
            });
            group.bench_function(BenchmarkId::new("sparse_dw", &id), |b| {
                b.iter(|| sparse::backward_weight(&g, black_box(&bits), &dy, &mut dw))
            });
        }
    }
    group.finish();
}

/// Both gradients of `mnist-cnn`'s conv2 (spike input at density 0.3, `∂L/∂y` through its batch
/// norm) one after the other and in one pass (`conv::backward_spikes_from`), for the ratio in
/// one run.
fn through_bn_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d_through_bn");
    group.sample_size(20);
    let g = ConvGeom::new(256, 32, 14, 14, 64, 3, 1, 1).unwrap();
    let w = data(g.weight_len(), 2);
    let (grad, bn_input) = (data(g.n * g.out_img(), 3), data(g.n * g.out_img(), 4));
    let affines: Vec<bn::GradAffine> = (0..g.c_out)
        .map(|o| bn::GradAffine {
            a: 1.0 + o as f32 / 64.0,
            b: -0.01,
            c: 0.001,
            mean: 0.1,
        })
        .collect();
    let dy = conv::OutputGrad::ThroughBn {
        grad: &grad,
        bn_input: &bn_input,
        affines: &affines,
    };
    let bits = SpikeBits::from_f32(&spikes(g.n * g.in_img(), 0.3), g.n, g.c_in, 196, 1.0);
    let (mut dx, mut dw) = (vec![0.0; g.n * g.in_img()], vec![0.0; g.weight_len()]);
    let mut ws = ConvWorkspace::default();
    group.throughput(Throughput::Elements(2 * g.flops()));
    let label = "mnist_c2_32to64_14x14_k3";
    group.bench_function(BenchmarkId::new("separate", label), |b| {
        b.iter(|| {
            conv::backward_weight_spikes_from(&g, black_box(&bits), dy, &mut dw, &mut ws);
            conv::backward_input_from(&g, dy, &w, &mut dx);
        })
    });
    group.bench_function(BenchmarkId::new("joint", label), |b| {
        b.iter(|| {
            let bits = black_box(&bits);
            conv::backward_spikes_from(&g, bits, dy, &w, &mut dw, &mut dx, &mut ws)
        })
    });
    group.finish();
}

/// A classifier head (`mnist-cnn`'s `fc`: 3136 → 10 at T·B = 256) by `kernels::narrow` and by
/// the GEMM it replaced (the input gradient stays a GEMM), for the ratios in one run.
fn head_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_head");
    group.sample_size(20);
    let (n, i, o) = (256, 3136, 10);
    let (x, w, dy) = (data(n * i, 1), data(o * i, 2), data(n * o, 3));
    let (mut y, mut dx, mut dw) = (vec![0.0; n * o], vec![0.0; n * i], vec![0.0; o * i]);
    group.throughput(Throughput::Elements(2 * (n * i * o) as u64));
    group.bench_function("narrow_fwd_256x3136x10", |b| {
        b.iter(|| narrow::forward(black_box(&x), &w, &mut y, (n, i, o), 0.0))
    });
    group.bench_function("narrow_dw_256x3136x10", |b| {
        b.iter(|| narrow::weight_grad(black_box(&dy), &x, &mut dw, (n, i, o)))
    });
    group.bench_function("narrow_bwd_in_place_256x3136x10", |b| {
        // After the first call `xd` holds `dy·w`, which the next calls read as their input
        // and write again: the same work on the same values every time.
        let mut xd = x.clone();
        b.iter(|| narrow::backward_in_place(black_box(&dy), &w, &mut xd, Some(&mut dw), (n, i, o)))
    });
    let (lx, lw, ly) = (
        MatLayout::row_major(n, i),
        MatLayout::row_major(o, i),
        MatLayout::row_major(n, o),
    );
    group.bench_function("gemm_fwd_256x3136x10", |b| {
        b.iter(|| sgemm_rows_par(1.0, black_box(&x), lx, &w, lw.t(), 0.0, &mut y, ly))
    });
    group.bench_function("gemm_dx_256x3136x10", |b| {
        b.iter(|| sgemm_rows_par(1.0, black_box(&dy), ly, &w, lw, 0.0, &mut dx, lx))
    });
    group.finish();
}

criterion_group!(
    benches,
    conv_benches,
    sparse_benches,
    bn_pool_benches,
    through_bn_benches,
    head_benches
);
criterion_main!(benches);
