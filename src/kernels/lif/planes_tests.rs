//! Tests of the plane-wise evaluation kernel against the unfused chain.

use super::super::forward_eval;
use super::*;
use crate::kernels::bn::{normalize_inplace, BnDims};
use crate::kernels::conv::sparse::SpikeBits;
use crate::kernels::elementwise::par_add_assign;
use crate::neuron::surrogate::{SurrogateKind, SurrogateShape};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn params(reset: Reset, out_theta: bool) -> StepParams {
    let kind = if out_theta {
        SurrogateKind::Trsg
    } else {
        SurrogateKind::As
    };
    super::super::tests::params(kind, SurrogateShape::Rect, reset, 0.9)
}

/// The unfused chain: batch norm in place, repeat copy, residual add, in-place LIF, max pool.
fn chain(
    p: &StepParams,
    u0: f32,
    t: usize,
    st: &PlaneStages,
    input: &[f32],
    spike_addend: Option<&SpikeBits>,
) -> (Vec<f32>, ForwardSums) {
    let mut x = input.to_vec();
    if let Some(a) = st.affine {
        let d = BnDims {
            n: x.len() / (st.channels * st.plane_len()),
            c: st.channels,
            hw: st.plane_len(),
        };
        normalize_inplace(&mut x, d, a.mean, a.scale, a.shift);
    }
    if st.repeated {
        x = x.repeat(t);
    }
    match (st.addend, spike_addend) {
        (Some(Addend::Dense(d)), _) => par_add_assign(&mut x, d),
        (Some(Addend::Spikes { .. }), Some(bits)) => bits.add_to(&mut x),
        (None, _) => {}
        (Some(Addend::Spikes { .. }), None) => unreachable!("the test passes the bits"),
    }
    let sums = forward_eval(p, u0, t, &mut x);
    let out = match st.pool {
        Some(g) => {
            let g = PoolGeom::new(t * st.planes, g.h, g.w, g.k, g.stride, g.pad).unwrap();
            let mut y = vec![0.0; g.planes * g.out_plane()];
            pool::max_forward(&g, &x, &mut y, None);
            y
        }
        None => x,
    };
    (out, sums)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum AddendKind {
    None,
    Dense,
    Spikes,
}

/// Every stage combination (affine, repeat, dense or spike addend, pooling), both resets and
/// output scales, planes with a scalar tail, of one and of several packed words, odd pooling
/// geometries and several tasks: the same bits as the chain, the same counts, and the output
/// packed as `SpikeBits::pack` packs it.
#[test]
fn fused_planes_equal_the_unfused_chain() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shapes = [(2, 3, 5, 7), (40, 16, 6, 6), (1, 2, 1, 1), (3, 2, 9, 11)];
    let (mut cases, mut total_spikes) = (0, 0);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (b, c, h, w) in shapes {
        let built = [
            PoolGeom::new(1, h, w, 2, 2, 0),
            PoolGeom::new(1, h, w, 3, 2, 1),
        ];
        let pools = std::iter::once(None).chain(built.into_iter().flatten().map(Some));
        for pool in pools {
            for (repeated, with_affine, kind) in [
                (false, false, AddendKind::None),
                (true, false, AddendKind::None),
                (false, true, AddendKind::None),
                (true, true, AddendKind::None),
                (false, true, AddendKind::Dense),
                (false, true, AddendKind::Spikes),
                (false, false, AddendKind::Spikes),
            ] {
                for (reset, out_theta) in [(Reset::Soft, true), (Reset::Hard, false)] {
                    let t = 3;
                    let p = params(reset, out_theta);
                    let mean: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
                    let scale: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..2.0)).collect();
                    let shift: Vec<f32> = (0..c).map(|_| rng.random_range(-0.3..0.6)).collect();
                    let len = t * b * c * h * w;
                    let dense: Vec<f32> = (0..len).map(|_| rng.random_range(-0.8..0.8)).collect();
                    let spikes: Vec<f32> = (0..len)
                        .map(|_| if rng.random_bool(0.3) { 0.7 } else { 0.0 })
                        .collect();
                    let packed = SpikeBits::from_f32(&spikes, t * b, c, h * w, 0.7);
                    let addend = match kind {
                        AddendKind::None => None,
                        AddendKind::Dense => Some(Addend::Dense(&dense)),
                        AddendKind::Spikes => Some(Addend::spikes(&packed)),
                    };
                    let st = PlaneStages {
                        planes: b * c,
                        channels: c,
                        height: h,
                        width: w,
                        repeated,
                        affine: with_affine.then_some(ChannelAffine {
                            mean: &mean,
                            scale: &scale,
                            shift: &shift,
                        }),
                        pool,
                        addend,
                    };
                    let input: Vec<f32> = (0..st.input_len(t))
                        .map(|_| rng.random_range(-1.0..2.5))
                        .collect();
                    let (want, want_sums) = chain(&p, 0.2, t, &st, &input, Some(&packed));
                    let want_words = SpikeBits::from_f32(&want, t * b, c, st.out_plane_len(), 1.0);
                    let mut got = vec![f32::NAN; st.output_len(t)];
                    let mut words = vec![u64::MAX; want_words.words().len()];
                    let sums =
                        forward_eval_planes(&p, 0.2, t, &st, &input, &mut got, Some(&mut words));
                    let case = format!(
                        "{b}x{c}x{h}x{w} {pool:?} rep {repeated} bn {with_affine} {kind:?} {reset:?}"
                    );
                    assert_eq!(bits(&got), bits(&want), "{case}");
                    assert_eq!(words, want_words.words(), "packed output, {case}");
                    assert_eq!(
                        (sums.spikes, sums.active),
                        (want_sums.spikes, want_sums.active)
                    );
                    if !repeated && pool.is_none() {
                        let mut io = input.clone();
                        words.fill(u64::MAX);
                        let s2 = forward_eval_planes_in_place(
                            &p,
                            0.2,
                            t,
                            &st,
                            &mut io,
                            Some(&mut words),
                        );
                        assert_eq!(bits(&io), bits(&want), "in place, {case}");
                        assert_eq!(words, want_words.words(), "in place packed, {case}");
                        assert_eq!(s2, sums);
                    }
                    let mut unpacked = vec![f32::NAN; st.output_len(t)];
                    forward_eval_planes(&p, 0.2, t, &st, &input, &mut unpacked, None);
                    assert_eq!(bits(&unpacked), bits(&want), "without packing, {case}");
                    assert!(
                        (sums.sum_u_active - want_sums.sum_u_active).abs()
                            <= 1e-4 * (1.0 + want_sums.sum_u_active.abs())
                    );
                    total_spikes += want_sums.spikes;
                    cases += 1;
                }
            }
        }
    }
    // (5×7, 6×6 and 9×11: no pool, 2×2, 3×3/2; 1×1: no pool, 3×3/2) × 7 stage sets × 2 resets.
    assert_eq!(cases, (3 + 3 + 2 + 3) * 7 * 2);
    assert!(total_spikes > 10_000);
}

/// A stage set the kernel cannot run is refused before any work: an addend on a repeated
/// input, or one of the wrong length.
#[test]
#[should_panic(expected = "addend on a repeated input")]
fn an_addend_on_a_repeated_input_is_refused() {
    let dense = vec![0.0; 2 * 4];
    let st = PlaneStages {
        planes: 2,
        channels: 1,
        height: 2,
        width: 2,
        repeated: true,
        affine: None,
        pool: None,
        addend: Some(Addend::Dense(&dense)),
    };
    let p = params(Reset::Soft, true);
    forward_eval_planes(&p, 0.0, 2, &st, &[0.0; 8], &mut [0.0; 16], None);
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (b, c, h, w, t) = (48, 16, 6, 6, 4);
    let st = PlaneStages {
        planes: b * c,
        channels: c,
        height: h,
        width: w,
        repeated: true,
        affine: None,
        pool: PoolGeom::new(1, h, w, 2, 2, 0),
        addend: None,
    };
    let input: Vec<f32> = (0..st.input_len(t))
        .map(|_| rng.random_range(-1.0..2.5))
        .collect();
    let p = params(Reset::Soft, true);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0.0; st.output_len(t)];
        let s = pool.install(|| forward_eval_planes(&p, 0.0, t, &st, &input, &mut out, None));
        (out, s.sum_u_active.to_bits())
    };
    assert_eq!(run(1), run(2));
}
