//! Fused LIF kernels at ResNet-19 layer sizes (T = 4, B = 64; METHOD.md §6.1): training forward,
//! backward, forward+backward, eval forward, the three spike storages, a STREAM-like triad
//! over the same bytes as a same-run bandwidth reference, an L2-resident size that shows
//! the compute rate, and the fused eval and training kernels (plane runs, batch norm → LIF)
//! against the layer-by-layer chains they replace.
//!
//! Throughput is reported in neuron-steps (T·N) and in counted bytes (each f32 read or written
//! once, no write-allocate traffic, like STREAM): training forward 12 B per neuron-step
//! (read I, write O in place, write M), backward 12 B (read ∂L/∂O, write ∂L/∂I in place,
//! read M), eval forward 8 B.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --bench lif -- --warm-up-time 1 --measurement-time 3
//! RAYON_NUM_THREADS=2 cargo bench --bench lif -- --warm-up-time 1 --measurement-time 3
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mpsnn::kernels::lif::{backward, forward_eval, forward_train, SpikeStorage, Tape, CHUNK};
use mpsnn::neuron::params::{k_from_theta, Derived};
use mpsnn::neuron::step::StepParams;
use mpsnn::neuron::surrogate::{Reset, Surrogate, SurrogateKind, SurrogateShape};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const T: usize = 4;
const B: usize = 64;
const SIZES: [(&str, usize); 3] = [
    ("128x32x32", 128 * 32 * 32),
    ("256x16x16", 256 * 16 * 16),
    ("512x8x8", 512 * 8 * 8),
];

fn params() -> StepParams {
    let d = Derived::from_raw(k_from_theta(1.0).unwrap(), 0.0);
    let sur = Surrogate::new(SurrogateKind::Trsg, SurrogateShape::Rect, 1.0).unwrap();
    StepParams::new(&d, sur, Reset::Soft)
}

fn data(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

fn throughput(steps: usize, bytes_per_step: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: steps as u64,
        bytes: (steps * bytes_per_step) as u64,
    }
}

fn lif(c: &mut Criterion) {
    let p = params();
    for (name, per_sample) in SIZES {
        let n = B * per_sample;
        let steps = T * n;
        // Inputs spread over [−1, 2.5]θ: about a quarter of the neuron-steps fire.
        let input = data(steps, -1.0, 2.5, 1);
        let g_out = data(steps, -1.0, 1.0, 2);
        let mut group = c.benchmark_group(format!("lif/{name}"));
        group.sample_size(10);

        let mut tape = Tape::new(SpikeStorage::Recompute);
        group.throughput(throughput(steps, 12));
        group.bench_function("forward_train", |b| {
            b.iter_batched_ref(
                || input.clone(),
                |io| forward_train(&p, 0.2, T, io, &mut tape),
                BatchSize::LargeInput,
            )
        });
        forward_train(&p, 0.2, T, &mut input.clone(), &mut tape);
        group.bench_function("backward", |b| {
            b.iter_batched_ref(
                || g_out.clone(),
                |g| backward(&p, 0.2, &tape, g, None),
                BatchSize::LargeInput,
            )
        });
        group.throughput(throughput(steps, 24));
        group.bench_function("forward_backward", |b| {
            b.iter_batched_ref(
                || (input.clone(), g_out.clone()),
                |(io, g)| {
                    forward_train(&p, 0.2, T, io, &mut tape);
                    backward(&p, 0.2, &tape, g, None)
                },
                BatchSize::LargeInput,
            )
        });
        group.throughput(throughput(steps, 8));
        group.bench_function("forward_eval", |b| {
            b.iter_batched_ref(
                || input.clone(),
                |io| forward_eval(&p, 0.2, T, io),
                BatchSize::LargeInput,
            )
        });
        // a[i] = b[i] + s·c[i] over T·N floats, chunked like the LIF kernels: 12 B per element.
        let (mut a, bb, cc) = (vec![0f32; steps], input.clone(), g_out.clone());
        group.throughput(throughput(steps, 12));
        group.bench_function("triad_reference", |b| {
            b.iter(|| {
                a.par_chunks_mut(CHUNK)
                    .zip(bb.par_chunks(CHUNK))
                    .zip(cc.par_chunks(CHUNK))
                    .for_each(|((a, b), c)| {
                        for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                            *a = b + 0.5 * c;
                        }
                    })
            })
        });
        group.finish();
    }
}

/// Forward+backward with each spike storage at the largest size (bytes counted for Recompute,
/// so the reported GB/s of Bits/Bytes are comparable times, not their own traffic).
fn spike_storage(c: &mut Criterion) {
    let p = params();
    let (_, per_sample) = SIZES[0];
    let steps = T * B * per_sample;
    let input = data(steps, -1.0, 2.5, 1);
    let g_out = data(steps, -1.0, 1.0, 2);
    let mut group = c.benchmark_group("lif/spike_storage/128x32x32");
    group.sample_size(10);
    group.throughput(throughput(steps, 24));
    for storage in [
        SpikeStorage::Recompute,
        SpikeStorage::Bits,
        SpikeStorage::Bytes,
    ] {
        let mut tape = Tape::new(storage);
        group.bench_function(format!("{storage:?}"), |b| {
            b.iter_batched_ref(
                || (input.clone(), g_out.clone()),
                |(io, g)| {
                    forward_train(&p, 0.2, T, io, &mut tape);
                    backward(&p, 0.2, &tape, g, None)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// One chunk (16 K neurons, T = 4: 256 KiB per buffer) stays in L2, so this measures the
/// kernels' compute rate rather than DRAM; it runs on one thread. `PerIteration` batches keep
/// each freshly copied input hot in cache.
fn l2_resident(c: &mut Criterion) {
    let p = params();
    let steps = T * CHUNK;
    let input = data(steps, -1.0, 2.5, 1);
    let g_out = data(steps, -1.0, 1.0, 2);
    let mut group = c.benchmark_group("lif/l2_resident");
    group.throughput(throughput(steps, 12));
    let mut tape = Tape::new(SpikeStorage::Recompute);
    group.bench_function("forward_train", |b| {
        b.iter_batched_ref(
            || input.clone(),
            |io| forward_train(&p, 0.2, T, io, &mut tape),
            BatchSize::PerIteration,
        )
    });
    forward_train(&p, 0.2, T, &mut input.clone(), &mut tape);
    group.bench_function("backward", |b| {
        b.iter_batched_ref(
            || g_out.clone(),
            |g| backward(&p, 0.2, &tape, g, None),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Eval of `mnist-cnn`'s stem (B = 64, 32 × 28 × 28, T = 4): batch norm → repeat → LIF →
/// 2×2 max pool layer by layer (the kernels the layers call, in their order) against the
/// plane-wise fused kernel (`Network`'s default in eval).
fn eval_planes(c: &mut Criterion) {
    use mpsnn::kernels::bn::{normalize_inplace, BnDims};
    use mpsnn::kernels::lif::{forward_eval_planes, ChannelAffine, PlaneStages};
    use mpsnn::kernels::pool::{max_forward, PoolGeom};
    let (ch, h, w) = (32, 28, 28);
    let input = data(B * ch * h * w, -1.0, 2.5, 11);
    let mean = data(ch, -0.2, 0.2, 12);
    let scale = data(ch, 0.5, 1.5, 13);
    let shift = data(ch, 0.0, 0.5, 14);
    let p = params();
    let mut g = c.benchmark_group("eval_planes");
    g.throughput(Throughput::Elements((T * B * ch * h * w) as u64));
    g.bench_function("stem_layer_by_layer", |bch| {
        let pool = PoolGeom::new(T * B * ch, h, w, 2, 2, 0).unwrap();
        bch.iter_batched(
            || input.clone(),
            |mut x| {
                let d = BnDims {
                    n: B,
                    c: ch,
                    hw: h * w,
                };
                normalize_inplace(&mut x, d, &mean, &scale, &shift);
                let mut rep = x.repeat(T);
                forward_eval(&p, 0.0, T, &mut rep);
                let mut y = vec![0.0; pool.planes * pool.out_plane()];
                max_forward(&pool, &rep, &mut y, None);
                y
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("stem_fused", |bch| {
        let stages = PlaneStages {
            planes: B * ch,
            channels: ch,
            height: h,
            width: w,
            repeated: true,
            affine: Some(ChannelAffine {
                mean: &mean,
                scale: &scale,
                shift: &shift,
            }),
            pool: PoolGeom::new(1, h, w, 2, 2, 0),
            addend: None,
        };
        bch.iter(|| {
            let mut y = vec![0.0; stages.output_len(T)];
            forward_eval_planes(&p, 0.0, T, &stages, &input, &mut y, None);
            y
        })
    });
    g.finish();
}

/// The tail of a ResNet-19 identity block in eval (128 × 32 × 32, B = 8, T = 4): the body's
/// final batch norm, the shortcut added from its spike bits, the neuron, and the next conv's
/// packing of the spikes, layer by layer against one plane-wise pass that packs as it goes.
fn residual_tail(c: &mut Criterion) {
    use mpsnn::kernels::bn::{normalize_inplace, BnDims};
    use mpsnn::kernels::conv::sparse::SpikeBits;
    use mpsnn::kernels::lif::{forward_eval_planes_in_place, Addend, ChannelAffine, PlaneStages};
    let (b, ch, h, w) = (8, 128, 32, 32);
    let n = T * b * ch * h * w;
    let input = data(n, -1.0, 1.0, 31);
    let spikes: Vec<f32> = data(n, 0.0, 1.0, 32)
        .iter()
        .map(|&v| if v < 0.15 { 0.8 } else { 0.0 })
        .collect();
    let shortcut = SpikeBits::from_f32(&spikes, T * b, ch, h * w, 0.8);
    let mean = data(ch, -0.2, 0.2, 33);
    let scale = data(ch, 0.5, 1.5, 34);
    let shift = data(ch, 0.0, 0.5, 35);
    let p = params();
    let mut g = c.benchmark_group("residual_tail");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("layer_by_layer", |bch| {
        bch.iter_batched(
            || input.clone(),
            |mut x| {
                let d = BnDims {
                    n: T * b,
                    c: ch,
                    hw: h * w,
                };
                normalize_inplace(&mut x, d, &mean, &scale, &shift);
                shortcut.add_to(&mut x);
                forward_eval(&p, 0.0, T, &mut x);
                SpikeBits::from_f32(&x, T * b, ch, h * w, 1.0)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("fused", |bch| {
        let stages = PlaneStages {
            planes: b * ch,
            channels: ch,
            height: h,
            width: w,
            repeated: false,
            affine: Some(ChannelAffine {
                mean: &mean,
                scale: &scale,
                shift: &shift,
            }),
            pool: None,
            addend: Some(Addend::spikes(&shortcut)),
        };
        bch.iter_batched(
            || input.clone(),
            |mut x| {
                let mut words = vec![0u64; T * b * ch * stages.out_plane_words()];
                forward_eval_planes_in_place(&p, 0.0, T, &stages, &mut x, Some(&mut words));
                (x, words)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A training step of `mnist-cnn`'s stem after its batch norm (B = 64, 32 × 28 × 28, T = 4):
/// repeat → LIF → 2×2 max pool forward and backward, layer by layer (the kernels the layers
/// call: tiling, LIF with a tape, pooling with argmax; pool backward, LIF backward, the sum
/// over T) against the fused training kernels (`Network`'s default in training); and the fused
/// kernels on `mnist-cnn`'s second neuron (64 × 14 × 14, an input per step, with its batch
/// norm's affine and backward sums).
fn train_planes(c: &mut Criterion) {
    use mpsnn::kernels::elementwise::{par_sum_tiles, par_tile};
    use mpsnn::kernels::lif::{
        backward_train_planes, forward_train_planes, ChannelAffine, PlaneStages,
    };
    use mpsnn::kernels::pool::{max_backward, max_forward, PoolGeom};
    let (ch, h, w) = (32, 28, 28);
    let input = data(B * ch * h * w, -1.0, 2.5, 21);
    let dy = data(T * B * ch * (h / 2) * (w / 2), -0.01, 0.01, 22);
    let p = params();
    let mut g = c.benchmark_group("train_planes");
    g.throughput(Throughput::Elements((T * B * ch * h * w) as u64));
    g.bench_function("stem_layer_by_layer", |bch| {
        let pool = PoolGeom::new(T * B * ch, h, w, 2, 2, 0).unwrap();
        let mut tape = Tape::new(SpikeStorage::Recompute);
        let mut rep = vec![0.0; T * input.len()];
        let mut y = vec![0.0; pool.planes * pool.out_plane()];
        let mut arg = vec![0u32; y.len()];
        let mut g_lif = vec![0.0; rep.len()];
        let mut dx = vec![0.0; input.len()];
        bch.iter(|| {
            par_tile(&mut rep, &input);
            forward_train(&p, 0.0, T, &mut rep, &mut tape);
            max_forward(&pool, &rep, &mut y, Some(&mut arg));
            max_backward(&pool, &dy, &arg, &mut g_lif);
            backward(&p, 0.0, &tape, &mut g_lif, None);
            par_sum_tiles(&mut dx, &g_lif);
            dx[0]
        })
    });
    // Without and (as `mnist-cnn` trains it, with its backward sums) with the batch norm's
    // affine applied to the repeated input.
    let mean = data(ch, -0.2, 0.2, 28);
    let scale = data(ch, 0.5, 1.5, 29);
    let shift = data(ch, -0.2, 0.4, 30);
    for (name, with_affine) in [("stem_fused", false), ("stem_fused_affine", true)] {
        g.bench_function(name, |bch| {
            let stages = PlaneStages {
                planes: B * ch,
                channels: ch,
                height: h,
                width: w,
                repeated: true,
                affine: with_affine.then_some(ChannelAffine {
                    mean: &mean,
                    scale: &scale,
                    shift: &shift,
                }),
                pool: PoolGeom::new(1, h, w, 2, 2, 0),
                addend: None,
            };
            let mut y = vec![0.0; stages.output_len(T)];
            let mut dx = vec![0.0; input.len()];
            let mut sums = vec![(0.0, 0.0); B * ch];
            bch.iter(|| {
                forward_train_planes(&p, 0.0, T, &stages, &input, &mut y);
                let sums = with_affine.then_some(&mut sums[..]);
                backward_train_planes(&p, 0.0, T, &stages, &input, &dy, &mut dx, sums);
                dx[0]
            })
        });
    }
    // The stem stage's backward with the stem's weight gradient: the neuron's gradient written
    // and read again through the batch norm's affines, against the per-plane sums taken in
    // the neuron's backward and combined by linearity (`Network`'s default).
    {
        use mpsnn::kernels::bn::GradAffine;
        use mpsnn::kernels::conv::{stem, stem_linear, ConvGeom};
        use mpsnn::kernels::lif::backward_train_planes_to_stem;
        let geom = ConvGeom::new(B, 1, h, w, ch, 3, 1, 1).unwrap();
        let images = data(B * h * w, 0.0, 1.0, 31);
        let stages = PlaneStages {
            planes: B * ch,
            channels: ch,
            height: h,
            width: w,
            repeated: true,
            affine: Some(ChannelAffine {
                mean: &mean,
                scale: &scale,
                shift: &shift,
            }),
            pool: PoolGeom::new(1, h, w, 2, 2, 0),
            addend: None,
        };
        let affines: Vec<GradAffine> = (0..ch)
            .map(|o| GradAffine {
                a: scale[o],
                b: -0.01 * scale[o],
                c: 0.001 * shift[o],
                mean: mean[o],
            })
            .collect();
        let mut dw = vec![0.0; geom.weight_len()];
        let mut sums = vec![(0.0, 0.0); B * ch];
        g.bench_function("stem_backward_through_dy", |bch| {
            let mut dx = vec![0.0; input.len()];
            bch.iter(|| {
                let s = Some(&mut sums[..]);
                backward_train_planes(&p, 0.0, T, &stages, &input, &dy, &mut dx, s);
                stem::backward_weight_through_bn(&geom, &images, &dx, &input, &affines, &mut dw);
                dw[0]
            })
        });
        g.bench_function("stem_backward_linear", |bch| {
            let mut taps = vec![[0.0; 9]; B * ch];
            let weight = data(geom.weight_len(), -0.3, 0.3, 32);
            bch.iter(|| {
                let (s, t) = (&mut sums[..], &mut taps[..]);
                backward_train_planes_to_stem(&p, 0.0, T, &stages, &input, &dy, s, &images, t);
                let (w, k) = (&weight[..], &affines[..]);
                stem_linear::weight_grad(&geom, &images, w, None, &taps, k, &mut dw);
                dw[0]
            })
        });
    }
    // conv2's neuron: every step its own input, read through the batch norm's affine, and the
    // batch norm's backward plane sums taken in the backward.
    let (ch, h, w) = (64, 14, 14);
    let input = data(T * B * ch * h * w, -1.0, 2.5, 23);
    let dy = data(T * B * ch * (h / 2) * (w / 2), -0.01, 0.01, 24);
    let mean = data(ch, -0.2, 0.2, 25);
    let scale = data(ch, 0.5, 1.5, 26);
    let shift = data(ch, -0.2, 0.4, 27);
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("conv2_fused_affine", |bch| {
        let stages = PlaneStages {
            planes: B * ch,
            channels: ch,
            height: h,
            width: w,
            repeated: false,
            affine: Some(ChannelAffine {
                mean: &mean,
                scale: &scale,
                shift: &shift,
            }),
            pool: PoolGeom::new(1, h, w, 2, 2, 0),
            addend: None,
        };
        let mut y = vec![0.0; stages.output_len(T)];
        let mut dx = vec![0.0; input.len()];
        let mut sums = vec![(0.0, 0.0); T * B * ch];
        bch.iter(|| {
            forward_train_planes(&p, 0.0, T, &stages, &input, &mut y);
            backward_train_planes(&p, 0.0, T, &stages, &input, &dy, &mut dx, Some(&mut sums));
            dx[0]
        })
    });
    g.finish();
}

/// A training batch norm before a deferred LIF at ResNet-19's layer 1 (T·B = 256, 128 × 32 × 32):
/// layer by layer (normalize into a fresh buffer, LIF forward in place on it; in backward the
/// normalize again and the tape rebuild) against the fused kernel reading the batch norm's
/// input through its affine (`forward_affine`, once with output and once with the tape).
fn bn_lif(c: &mut Criterion) {
    use mpsnn::kernels::bn::{normalize, BnDims};
    use mpsnn::kernels::lif::{forward_affine, ChannelAffine};
    let d = BnDims {
        n: T * B,
        c: 128,
        hw: 32 * 32,
    };
    let x = data(d.len(), -1.0, 3.0, 31);
    let mean = data(d.c, -0.2, 0.2, 32);
    let scale = data(d.c, 0.5, 1.5, 33);
    let shift = data(d.c, -0.2, 0.4, 34);
    let p = params();
    let mut g = c.benchmark_group("bn_lif/128x32x32");
    g.sample_size(10);
    g.throughput(Throughput::Elements(d.len() as u64));
    let mut y = vec![0.0; d.len()];
    let mut tape = Tape::new(SpikeStorage::Recompute);
    g.bench_function("layer_by_layer", |bch| {
        bch.iter(|| {
            normalize(&x, &mut y, d, &mean, &scale, &shift);
            forward_eval(&p, 0.0, T, &mut y);
            normalize(&x, &mut y, d, &mean, &scale, &shift);
            forward_train(&p, 0.0, T, &mut y, &mut tape)
        })
    });
    let affine = ChannelAffine {
        mean: &mean,
        scale: &scale,
        shift: &shift,
    };
    g.bench_function("fused", |bch| {
        bch.iter(|| {
            forward_affine(&p, 0.0, T, &x, &affine, d.hw, Some(&mut y), None);
            forward_affine(&p, 0.0, T, &x, &affine, d.hw, None, Some(&mut tape))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    lif,
    spike_storage,
    l2_resident,
    eval_planes,
    residual_tail,
    train_planes,
    bn_lif
);
criterion_main!(benches);
