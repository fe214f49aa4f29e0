use super::super::{backward, forward_train, ChannelAffine, SpikeStorage, Tape};
use super::*;
use crate::kernels::elementwise::par_sum_tiles;
use crate::kernels::pool::{self, PoolGeom};
use crate::neuron::surrogate::{Reset, SurrogateKind, SurrogateShape};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn params(kind: SurrogateKind, shape: SurrogateShape, reset: Reset) -> StepParams {
    super::super::tests::params(kind, shape, reset, 0.9)
}

struct Chain {
    out: Vec<f32>,
    dx: Vec<f32>,
    fwd: ForwardSums,
    bwd: BackwardSums,
}

/// The layer-by-layer chain: repeat copy, LIF forward with a tape, max pool with argmax;
/// pool backward, LIF backward, sum over the steps.
fn chain(p: &StepParams, u0: f32, t: usize, st: &PlaneStages, input: &[f32], dy: &[f32]) -> Chain {
    let mut normalized = input.to_vec();
    if let Some(a) = &st.affine {
        let rows = if st.repeated { 1 } else { t };
        let d = bn::BnDims {
            n: rows * st.planes / st.channels,
            c: st.channels,
            hw: st.plane_len(),
        };
        bn::normalize(input, &mut normalized, d, a.mean, a.scale, a.shift);
    }
    let input = &normalized[..];
    let mut x = if st.repeated {
        input.repeat(t)
    } else {
        input.to_vec()
    };
    let mut tape = Tape::new(SpikeStorage::Recompute);
    let fwd = forward_train(p, u0, t, &mut x, &mut tape);
    let full = st
        .pool
        .map(|g| PoolGeom::new(t * st.planes, g.h, g.w, g.k, g.stride, g.pad).unwrap());
    let (out, mut g) = match full {
        Some(g) => {
            let mut y = vec![0.0; g.planes * g.out_plane()];
            let mut arg = vec![0; y.len()];
            pool::max_forward(&g, &x, &mut y, Some(&mut arg));
            let mut gx = vec![f32::NAN; x.len()];
            pool::max_backward(&g, dy, &arg, &mut gx);
            (y, gx)
        }
        None => (x, dy.to_vec()),
    };
    let bwd = backward(p, u0, &tape, &mut g, None);
    let dx = if st.repeated {
        let mut d = vec![0.0; input.len()];
        par_sum_tiles(&mut d, &g);
        d
    } else {
        g
    };
    Chain { out, dx, fwd, bwd }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn check(
    p: &StepParams,
    shape: (usize, usize, usize, usize),
    pool: Option<PoolGeom>,
    repeated: bool,
    seed: u64,
) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (b, c, h, w) = shape;
    // T = 4 runs the kernels' unrolled bodies, 3 and 9 the general ones; each with and without
    // the affine.
    let t = [3, 4, 4, 9][(seed % 4) as usize];
    // Every other case through a batch-norm affine.
    let coefficient = |rng: &mut ChaCha8Rng, lo, hi| -> Vec<f32> {
        (0..c).map(|_| rng.random_range(lo..hi)).collect()
    };
    let (mean, scale, shift) = (
        coefficient(&mut rng, -0.5, 0.5),
        coefficient(&mut rng, 0.5, 1.5),
        coefficient(&mut rng, -0.3, 0.6),
    );
    let affine = seed.is_multiple_of(2).then_some(ChannelAffine {
        mean: &mean,
        scale: &scale,
        shift: &shift,
    });
    let st = PlaneStages {
        planes: b * c,
        channels: c,
        height: h,
        width: w,
        repeated,
        affine,
        addend: None,
        pool,
    };
    let input: Vec<f32> = (0..st.input_len(t))
        .map(|_| rng.random_range(-1.0..2.5))
        .collect();
    let mut dy: Vec<f32> = (0..st.output_len(t))
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    for v in dy.iter_mut().step_by(7) {
        *v = -0.0;
    }
    let want = chain(p, 0.2, t, &st, &input, &dy);
    let mut out = vec![f32::NAN; st.output_len(t)];
    let fwd = forward_train_planes(p, 0.2, t, &st, &input, &mut out);
    let mut dx = vec![f32::NAN; input.len()];
    let rows = if repeated { 1 } else { t };
    let mut bn_sums = vec![(f64::NAN, f64::NAN); rows * b * c];
    let sums_out = affine.is_some().then_some(&mut bn_sums[..]);
    let bwd = backward_train_planes(p, 0.2, t, &st, &input, &dy, &mut dx, sums_out);
    let bn = affine.is_some();
    let what = format!("{shape:?} {pool:?} repeated {repeated} bn {bn} {p:?}");
    assert_eq!(bits(&out), bits(&want.out), "output: {what}");
    assert_eq!(bits(&dx), bits(&want.dx), "dx: {what}");
    if bn {
        // The batch norm's own pass over the chain's gradient gives the same sums.
        let d = bn::BnDims {
            n: rows * b,
            c,
            hw: h * w,
        };
        let mut want_sums = vec![(0.0, 0.0); rows * b * c];
        bn::grad_plane_sums(&want.dx, &input, d, &mean, &mut want_sums);
        let sum_bits = |v: &[(f64, f64)]| -> Vec<(u64, u64)> {
            v.iter().map(|(a, b)| (a.to_bits(), b.to_bits())).collect()
        };
        assert_eq!(sum_bits(&bn_sums), sum_bits(&want_sums), "bn sums: {what}");
        // To a one-channel stem: no dx, the same sums, and each plane's taps of its dx plane.
        let images: Vec<f32> = (0..rows * b * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut taps = vec![[f64::NAN; 9]; rows * b * c];
        let mut stem_sums = vec![(f64::NAN, f64::NAN); rows * b * c];
        let stem_bwd = backward_train_planes_to_stem(
            p,
            0.2,
            t,
            &st,
            &input,
            &dy,
            &mut stem_sums,
            &images,
            &mut taps,
        );
        assert_eq!(
            sum_bits(&stem_sums),
            sum_bits(&want_sums),
            "stem bn sums: {what}"
        );
        assert_eq!(stem_bwd.g_theta.to_bits(), bwd.g_theta.to_bits(), "{what}");
        assert_eq!(stem_bwd.g_decay.to_bits(), bwd.g_decay.to_bits(), "{what}");
        let hw = h * w;
        let mut scratch = TapScratch::default();
        for (k, got) in taps.iter().enumerate() {
            scratch.load_image(&images[k / c * hw..][..hw], h, w);
            let plane = &want.dx[k * hw..][..hw];
            let want_taps = scratch.plane_taps(plane);
            assert_eq!(
                got.map(f64::to_bits),
                want_taps.map(f64::to_bits),
                "taps {k}: {what}"
            );
        }
    }
    assert_eq!(fwd.spikes, want.fwd.spikes, "{what}");
    assert_eq!(fwd.active, want.fwd.active, "{what}");
    assert_eq!(
        fwd.sum_u_active.to_bits(),
        want.fwd.sum_u_active.to_bits(),
        "{what}"
    );
    assert_eq!(bwd.g_theta.to_bits(), want.bwd.g_theta.to_bits(), "{what}");
    assert_eq!(bwd.g_decay.to_bits(), want.bwd.g_decay.to_bits(), "{what}");
    want.fwd.spikes
}

/// Bit for bit against the chain, sums included: planes that straddle chunk boundaries
/// (6×6 and 5×7 planes over several chunks), planes larger than a chunk, scalar tails,
/// odd and overlapping pool windows, repeated or not, with a batch-norm affine or not,
/// every surrogate and reset.
#[test]
fn fused_training_equals_the_unfused_chain() {
    let mut spikes = 0;
    let mut seed = 0;
    for shape in [
        (40, 16, 6, 6),
        (2, 3, 5, 7),
        (1, 2, 130, 130),
        (1, 1, 1, 1),
        (30, 21, 5, 7),
    ] {
        let (_, _, h, w) = shape;
        let pools = [
            None,
            PoolGeom::new(1, h, w, 2, 2, 0),
            PoolGeom::new(1, h, w, 3, 2, 1),
        ];
        for pool in pools.into_iter().filter(|g| g.is_some() || h * w < 100) {
            for repeated in [true, false] {
                for (kind, reset) in [
                    (SurrogateKind::Trsg, Reset::Soft),
                    (SurrogateKind::As, Reset::Hard),
                ] {
                    seed += 1;
                    spikes += check(
                        &params(kind, SurrogateShape::Rect, reset),
                        shape,
                        pool,
                        repeated,
                        seed,
                    );
                }
            }
        }
    }
    // Every surrogate shape on a multi-chunk layer with a tail of 4 per plane (5×7 → 2×3).
    for kind in [SurrogateKind::As, SurrogateKind::Rs, SurrogateKind::Trsg] {
        for shape in [
            SurrogateShape::Tri,
            SurrogateShape::Atan,
            SurrogateShape::Sigmoid,
        ] {
            seed += 1;
            let pool = PoolGeom::new(1, 5, 7, 2, 2, 0);
            spikes += check(
                &params(kind, shape, Reset::Soft),
                (30, 21, 5, 7),
                pool,
                true,
                seed,
            );
        }
    }
    assert!(
        spikes > 100_000,
        "too few spikes for a meaningful comparison: {spikes}"
    );
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let p = params(SurrogateKind::Trsg, SurrogateShape::Rect, Reset::Soft);
    let st = PlaneStages {
        planes: 48 * 16,
        channels: 16,
        height: 6,
        width: 6,
        repeated: true,
        affine: None,
        addend: None,
        pool: PoolGeom::new(1, 6, 6, 2, 2, 0),
    };
    let t = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let input: Vec<f32> = (0..st.input_len(t))
        .map(|_| rng.random_range(-1.0..2.5))
        .collect();
    let dy: Vec<f32> = (0..st.output_len(t))
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = vec![0.0; st.output_len(t)];
            let f = forward_train_planes(&p, 0.0, t, &st, &input, &mut out);
            let mut dx = vec![0.0; input.len()];
            let b = backward_train_planes(&p, 0.0, t, &st, &input, &dy, &mut dx, None);
            (
                bits(&out),
                bits(&dx),
                f.sum_u_active.to_bits(),
                b.g_theta.to_bits(),
                b.g_decay.to_bits(),
            )
        })
    };
    assert_eq!(run(1), run(2));
}
