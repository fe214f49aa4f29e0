//! Behaviour of the LIF layer and its kernels beyond the golden files: the worked vector of
//! METHOD.md §3.4, numerical robustness (sigmoid surrogate at huge |x|, extreme θ), switches
//! (frozen θ/τ, hard reset, MP-Init off, eval), the μ rule, shape errors, and a
//! finite-difference check of the time recursion.

use mpsnn::kernels::lif::{backward, forward_reference, forward_train, SpikeStorage, Tape};
use mpsnn::neuron::params::{sigmoid, Derived};
use mpsnn::neuron::step::StepParams;
use mpsnn::neuron::surrogate::{Reset, Surrogate, SurrogateKind, SurrogateShape};
use mpsnn::nn::lif::Lif;
use mpsnn::nn::spec::LifSpec;
use mpsnn::nn::{ForwardCtx, Layer};
use mpsnn::{Error, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wide::f32x8;

const KINDS: [SurrogateKind; 3] = [SurrogateKind::As, SurrogateKind::Rs, SurrogateKind::Trsg];
const SHAPES: [SurrogateShape; 4] = [
    SurrogateShape::Rect,
    SurrogateShape::Tri,
    SurrogateShape::Atan,
    SurrogateShape::Sigmoid,
];

fn spec(f: impl FnOnce(&mut LifSpec)) -> LifSpec {
    let mut s = LifSpec::new("lif");
    f(&mut s);
    s
}

fn tensor(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_vec(shape, data.to_vec()).unwrap()
}

/// (value, grad, trainable) of parameter `lif.<p>`.
fn param(lif: &mut Lif, p: &str) -> (f32, f32, bool) {
    let mut out = None;
    let name = format!("lif.{p}");
    lif.visit_params(&mut |q| {
        if q.name == name {
            out = Some((q.value.data()[0], q.grad.data()[0], q.trainable));
        }
    });
    out.unwrap()
}

/// METHOD.md §3.4, worked by hand: θ = 1, τ = 2 (λ = 1/2), μ = 0.3, I = [1.2, 0.4, 1.6, 0.9].
/// Forward: M = ½U + ½I = [0.75, 0.575, 1.0875, 0.49375]; only M[3] ≥ 1 fires, U[3] = 0.0875.
/// Backward with g_O = [1, −½, ¼, 2] and window g = 1[½ ≤ M ≤ 3/2] = [1, 1, 1, 0]:
///   t=4: g_M = 0                                  → g_I = 0
///   t=3: g_M = ¼;  g_θ += ¼·(1 − 1.0875) = −0.021875; decay += ¼·(1.0875 − 0.575)
///   t=2: g_U = ⅛, g_M = −½ (∂U/∂M = 0 in the window); g_θ += (−½ − ⅛)·(0 − 0.575)
///   t=1: g_U = −¼, g_M = 1; g_θ += (1 + ¼)·(0 − 0.75)
/// g_θ = −0.6, so ∂L/∂k = −0.6·sigmoid(k); decay = 0.665625, ∂L/∂w = ½·decay = 0.3328125.
#[test]
fn worked_vector_of_method_section_3_4() {
    let mut lif = Lif::from_spec(&spec(|s| s.mu = 0.3)).unwrap();
    let x = tensor(&[4, 1], &[1.2, 0.4, 1.6, 0.9]);
    let out = lif.forward(x, &ForwardCtx::train(4)).unwrap();
    let th = lif.theta();
    assert!((th - 1.0).abs() < 1e-7);
    assert_eq!(out.data(), &[0.0, 0.0, th, 0.0]);
    let m = lif.membrane().unwrap();
    for (a, b) in m.data().iter().zip([0.75, 0.575, 1.0875, 0.49375]) {
        assert!((a - b).abs() < 1e-6, "M {a} vs {b}");
    }
    assert!((lif.last_potential().unwrap().data()[0] - 0.49375).abs() < 1e-6);
    // μ ← 0.9·0.3 + 0.1·0.49375 (the one neuron fired).
    assert!((lif.mu() - 0.319375).abs() < 1e-6);

    let g = lif
        .backward(tensor(&[4, 1], &[1.0, -0.5, 0.25, 2.0]))
        .unwrap();
    for (a, b) in g.data().iter().zip([0.5, -0.25, 0.125, 0.0]) {
        assert!((a - b).abs() < 1e-6, "g_I {a} vs {b}");
    }
    let (k, gk, _) = param(&mut lif, "k");
    assert!((gk as f64 - (-0.6 * sigmoid(k as f64))).abs() < 1e-6);
    assert!((gk - (-0.379_272_3)).abs() < 1e-6);
    assert!((param(&mut lif, "w").1 - 0.332_812_5).abs() < 1e-6);
}

/// snnTorch computed the sigmoid surrogate as e^x/(1+e^x)², which is ∞/∞ = NaN for large x.
#[test]
fn sigmoid_surrogate_is_finite_at_huge_arguments() {
    for gamma in [0.1f32, 1.0, 4.0] {
        let s = Surrogate::new(SurrogateKind::Trsg, SurrogateShape::Sigmoid, gamma).unwrap();
        let xs = [
            1e3f32,
            -1e3,
            88.8,
            -103.9,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        // Finite, within [0, peak], and zero to f32 precision once |x| is large.
        let ok = |x: f32, d: f32| {
            d.is_finite() && (0.0..=0.25 / gamma).contains(&d) && (x.abs() < 1e3 || d < 1e-30)
        };
        for x in xs {
            let d = s.derivative(x);
            assert!(ok(x, d), "f′({x}) = {d} (γ={gamma})");
        }
        for group in xs.chunks(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..group.len()].copy_from_slice(group);
            let d = s.derivative(f32x8::new(lanes)).to_array();
            for (&x, d) in lanes.iter().zip(d).take(group.len()) {
                assert!(ok(x, d), "f32x8 f′({x}) = {d} (γ={gamma})");
            }
        }
        assert!((s.derivative(0.0f32) - 0.25 / gamma).abs() < 1e-6);
    }
}

/// Extreme thresholds, every family × shape × reset: gradients contain no NaN or ∞. "Finite"
/// for RS-SG at tiny θ means representable, not small: its ∂O/∂M = f′/θ reaches ~1e34 at
/// θ = 1.8e−35 (k = −80). The magnitudes are checked too, as METHOD.md §3.2–§3.4 predict:
/// RS-SG explodes at tiny θ and vanishes at huge θ, AS-SG starves at huge θ (its window of
/// fixed width 1 holds no neuron), and TrSG keeps ∂L/∂I of order one at both ends.
#[test]
fn gradients_stay_finite_for_extreme_thresholds() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for theta0 in [(-80f64).exp() as f32, 1e-6, 1e6] {
        for kind in KINDS {
            for shape in SHAPES {
                for reset in [Reset::Soft, Reset::Hard] {
                    let sp = spec(|s| {
                        (s.surrogate, s.shape, s.reset, s.theta0) = (kind, shape, reset, theta0);
                        s.mu = 0.2 * theta0;
                    });
                    let mut lif = Lif::from_spec(&sp).unwrap();
                    let th = lif.theta();
                    assert!((th / theta0 - 1.0).abs() < 1e-5, "θ {th} vs {theta0}");
                    // Half the inputs on the θ scale (inside windows), half on the unit scale.
                    let x: Vec<f32> = (0..4 * 40)
                        .map(|i| match i % 2 {
                            0 => th * rng.random_range(-1.0f32..4.0),
                            _ => rng.random_range(-3.0f32..3.0),
                        })
                        .collect();
                    let g: Vec<f32> = (0..x.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
                    lif.forward(tensor(&[4, 40], &x), &ForwardCtx::train(4))
                        .unwrap();
                    let gi = lif.backward(tensor(&[4, 40], &g)).unwrap();
                    let what = format!("θ0={theta0} {kind:?} {shape:?} {reset:?}");
                    assert!(gi.data().iter().all(|v| v.is_finite()), "g_I {what}");
                    let (gk, gw) = (param(&mut lif, "k").1, param(&mut lif, "w").1);
                    assert!(
                        gk.is_finite() && gw.is_finite(),
                        "g_k {gk}, g_w {gw} {what}"
                    );
                    assert!(lif.mu().is_finite(), "{what}");
                    let peak = gi.data().iter().fold(0f32, |a, v| a.max(v.abs()));
                    let (tiny, huge) = (theta0 < 1e-30, theta0 > 1e5);
                    let expected = match kind {
                        SurrogateKind::Rs if tiny => 1e20..f32::MAX,
                        SurrogateKind::Rs | SurrogateKind::As if huge => 0.0..1e-3,
                        SurrogateKind::Trsg => 1e-3..1e3,
                        _ => 0.0..f32::MAX,
                    };
                    assert!(expected.contains(&peak), "max |g_I| = {peak} {what}");
                }
            }
        }
    }
}

#[test]
fn frozen_theta_and_tau_get_no_gradient_and_keep_their_values() {
    let sp = spec(|s| (s.learn_theta, s.learn_tau, s.theta0, s.tau0) = (false, false, 0.8, 3.0));
    let mut lif = Lif::from_spec(&sp).unwrap();
    let (k0, w0) = (param(&mut lif, "k").0, param(&mut lif, "w").0);
    for _ in 0..2 {
        let x = tensor(&[2, 3], &[0.9, 2.0, 0.1, 1.5, 0.7, 3.0]);
        lif.forward(x, &ForwardCtx::train(2)).unwrap();
        lif.backward(tensor(&[2, 3], &[1.0; 6])).unwrap();
    }
    for p in ["k", "w"] {
        let (value, grad, trainable) = param(&mut lif, p);
        assert!(!trainable, "{p}");
        assert_eq!(grad, 0.0, "{p}");
        assert_eq!(value, if p == "k" { k0 } else { w0 });
    }
    assert!((lif.theta() - 0.8).abs() < 1e-6 && (lif.tau() - 3.0).abs() < 1e-5);
    // Only one frozen: the other still learns.
    let mut lif = Lif::from_spec(&spec(|s| s.learn_tau = false)).unwrap();
    lif.forward(tensor(&[2, 1], &[1.2, 1.2]), &ForwardCtx::train(2))
        .unwrap();
    lif.backward(tensor(&[2, 1], &[1.0, 1.0])).unwrap();
    assert!(param(&mut lif, "k").1 != 0.0 && param(&mut lif, "w").1 == 0.0);
}

/// Hard reset: U = M·(1 − S), so after a spike the next charge starts from 0; soft reset
/// subtracts θ instead. θ = 1, λ = ½, U[0] = 0, I = [3, 1]: M[1] = 1.5 fires; then
/// hard: M[2] = ½·0 + ½ = 0.5; soft: M[2] = ½·0.5 + ½ = 0.75.
#[test]
fn hard_reset_restarts_from_zero() {
    for (reset, m2) in [(Reset::Hard, 0.5), (Reset::Soft, 0.75)] {
        let mut lif = Lif::from_spec(&spec(|s| s.reset = reset)).unwrap();
        let out = lif
            .forward(tensor(&[2, 1], &[3.0, 1.0]), &ForwardCtx::train(2))
            .unwrap();
        assert_eq!(out.data()[1], 0.0);
        let m = lif.membrane().unwrap();
        assert!((m.data()[0] - 1.5).abs() < 1e-6 && (m.data()[1] - m2).abs() < 1e-6);
    }
}

#[test]
fn mp_init_off_starts_at_zero_and_never_moves_mu() {
    let mut lif = Lif::from_spec(&spec(|s| (s.mp_init, s.mu) = (false, 0.7))).unwrap();
    lif.forward(tensor(&[1, 2], &[1.0, 3.0]), &ForwardCtx::train(1))
        .unwrap();
    let m = lif.membrane().unwrap();
    assert!((m.data()[0] - 0.5).abs() < 1e-6, "M = λ·I from U[0] = 0");
    assert_eq!(lif.mu(), 0.7);
    lif.forward(tensor(&[1, 2], &[1.0, 3.0]), &ForwardCtx::eval(1))
        .unwrap();
    assert_eq!(lif.mu(), 0.7);
}

#[test]
fn eval_uses_mu_and_leaves_it_unchanged() {
    let mut lif = Lif::from_spec(&spec(|s| s.mu = 0.9)).unwrap();
    // From U[0] = 0.9: M = 0.45 + 0.5·1.2 = 1.05 ≥ 1 fires; from 0 it would not.
    let out = lif
        .forward(tensor(&[1, 1], &[1.2]), &ForwardCtx::eval(1))
        .unwrap();
    assert_eq!(out.data()[0], lif.theta());
    assert_eq!(lif.mu(), 0.9);
    assert!(matches!(
        lif.backward(tensor(&[1, 1], &[1.0])),
        Err(Error::NoForwardCache { .. })
    ));
}

#[test]
fn silent_batch_shrinks_mu_by_the_momentum() {
    let mut lif = Lif::from_spec(&spec(|s| s.mu = 0.5)).unwrap();
    lif.forward(tensor(&[2, 3], &[-1.0; 6]), &ForwardCtx::train(2))
        .unwrap();
    assert_eq!(lif.stats().active_fraction, 0.0);
    assert_eq!(lif.mu(), 0.45);
}

#[test]
fn stats_report_firing_rate_and_active_fraction() {
    let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
    // 4 neurons × T = 2: neuron 0 fires twice, neuron 1 once, others never.
    let x = tensor(&[2, 4], &[4.0, 2.5, 0.0, -1.0, 4.0, 0.0, 0.0, -1.0]);
    lif.forward(x, &ForwardCtx::eval(2)).unwrap();
    let s = lif.stats();
    assert_eq!((s.neurons, s.timesteps), (4, 2));
    assert_eq!(s.firing_rate, 3.0 / 8.0);
    assert_eq!(s.active_fraction, 0.5);
}

#[test]
fn names_shapes_and_buffers_follow_the_contract() {
    let mut lif = Lif::from_spec(&LifSpec::new("stem")).unwrap();
    let mut names = vec![];
    lif.visit_params(&mut |p| names.push((p.name.clone(), p.value.shape().to_vec())));
    lif.visit_buffers(&mut |b| names.push((b.name.clone(), b.value.shape().to_vec())));
    let want = [("stem.k", [1]), ("stem.w", [1]), ("stem.mu", [1])];
    assert_eq!(names.len(), 3);
    for ((n, s), (wn, ws)) in names.iter().zip(want) {
        assert_eq!((n.as_str(), s.as_slice()), (wn, &ws[..]));
    }
    assert_eq!(lif.output_shape(&[8, 3, 4, 4]).unwrap(), vec![8, 3, 4, 4]);
}

#[test]
fn bad_shapes_and_specs_are_errors() {
    let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
    let shape_err = |r: Result<Tensor, Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    assert!(shape_err(
        lif.forward(Tensor::zeros(&[6, 2]), &ForwardCtx::train(4))
    ));
    assert!(shape_err(
        lif.forward(Tensor::zeros(&[6, 2]), &ForwardCtx::train(0))
    ));
    assert!(matches!(
        lif.backward(Tensor::zeros(&[6, 2])),
        Err(Error::NoForwardCache { .. })
    ));
    lif.forward(Tensor::zeros(&[6, 2]), &ForwardCtx::train(3))
        .unwrap();
    assert!(shape_err(lif.backward(Tensor::zeros(&[6, 3]))));
    for bad in [
        spec(|s| s.theta0 = 0.0),
        spec(|s| s.tau0 = 1.0),
        spec(|s| s.gamma = -1.0),
        spec(|s| s.mu = f32::NAN),
    ] {
        assert!(
            matches!(Lif::from_spec(&bad), Err(Error::Spec(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn spike_storages_give_identical_layers() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..4 * 37).map(|_| rng.random_range(-1.0..3.0)).collect();
    let g: Vec<f32> = (0..4 * 37).map(|_| rng.random_range(-1.0..1.0)).collect();
    let run = |storage| {
        let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
        lif.set_spike_storage(storage);
        let o = lif
            .forward(tensor(&[4, 37], &x), &ForwardCtx::train(4))
            .unwrap();
        let gi = lif.backward(tensor(&[4, 37], &g)).unwrap();
        (
            o,
            gi,
            param(&mut lif, "k").1,
            param(&mut lif, "w").1,
            lif.mu(),
        )
    };
    let base = run(SpikeStorage::Recompute);
    assert_eq!(run(SpikeStorage::Bits), base);
    assert_eq!(run(SpikeStorage::Bytes), base);
}

/// A deferred layer (input recomputed in backward) rebuilds its membrane tape in a buffer from
/// the pool and gives it back after the backward; stale contents (NaN here) never leak into
/// the gradients, which equal those of a layer that kept its tape.
#[test]
fn a_deferred_layer_recycles_its_tape_through_the_pool() {
    use mpsnn::buffer_pool::{self, PoolScope};
    let (t, n) = (4, buffer_pool::MIN_POOLED_LEN / 2 + 3);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f32> = (0..t * n).map(|_| rng.random_range(-1.0..3.0)).collect();
    let g: Vec<f32> = (0..t * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let run = |deferred: bool| {
        let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
        lif.set_input_recomputable(deferred);
        let o = lif
            .forward(tensor(&[t, n], &x), &ForwardCtx::train(t))
            .unwrap();
        assert_eq!(lif.input_deferred(), deferred);
        let gi = if deferred {
            lif.backward_with_input(tensor(&[t, n], &g), tensor(&[t, n], &x))
        } else {
            lif.backward(tensor(&[t, n], &g))
        };
        (
            o,
            gi.unwrap(),
            param(&mut lif, "k").1,
            param(&mut lif, "w").1,
        )
    };
    let kept = run(false);
    buffer_pool::clear();
    let scope = PoolScope::training();
    buffer_pool::give_back(vec![f32::NAN; t * n]);
    let recycled = run(true);
    assert_eq!(
        buffer_pool::held_bytes(),
        2 * t * n * 4,
        "the pool holds the dropped recomputed input and the tape's buffer, the NaN one: \
         a tape of its own would make three"
    );
    drop(scope);
    buffer_pool::clear();
    assert_eq!(recycled, kept);
}

#[test]
fn recorder_is_opt_in_and_counts_every_neuron_step() {
    let mut lif = Lif::from_spec(&LifSpec::new("lif")).unwrap();
    let x = tensor(&[3, 5], &[0.5; 15]);
    lif.forward(x.clone(), &ForwardCtx::eval(3)).unwrap();
    assert!(lif.histogram().is_none());
    lif.set_recorder(Some(Default::default()));
    lif.forward(x.clone(), &ForwardCtx::eval(3)).unwrap();
    lif.forward(x, &ForwardCtx::train(3)).unwrap();
    let h = lif.histogram().unwrap();
    assert_eq!(h.total, vec![10, 10, 10]);
    assert!(h.counts.iter().all(|c| c.iter().sum::<u64>() == 10));
    // M = 0.25, 0.375, 0.4375 (·θ): below the TrSG window [θ/2, 3θ/2] at every step.
    assert_eq!(h.window_fraction(2), 0.0);
}

/// Finite differences of L = Σ r·O + Σ q·U[T] against the analytic backward (`grad_u_last` = q).
///
/// Where no M lies in the surrogate window (rectangle) or near θ, the surrogate terms vanish and
/// the spikes stay fixed under a small perturbation, so backward must equal the true gradient
/// of this piecewise-smooth L. U[T] depends on every input through the (1 − λ) chain, on λ
/// through the charge at every step, and on θ through the resets (and O = θS for TrSG); a wrong
/// λ-derivative, a wrong time recursion, a wrong U[t−1] recomputation or a wrong reset partial
/// changes these gradients. Inputs are "quiet" (I ∈ [−1.5, −1]) or "loud" (I ∈ [6, 8]) per
/// neuron-step, and neurons with any M within 0.1 of θ or of a window edge are discarded.
#[test]
fn finite_differences_match_where_the_surrogate_is_silent() {
    let (t, n, eps) = (4usize, 256usize, 1e-2f32);
    for kind in KINDS {
        for reset in [Reset::Soft, Reset::Hard] {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let (k, w) = (0.3f32, 0.2f32);
            let sur = Surrogate::new(kind, SurrogateShape::Rect, 1.0).unwrap();
            let p_at = |k: f32, w: f32| StepParams::new(&Derived::from_raw(k, w), sur, reset);
            let p = p_at(k, w);
            let input: Vec<f32> = (0..t * n)
                .map(|_| match rng.random_bool(0.3) {
                    true => rng.random_range(6.0..8.0),
                    false => rng.random_range(-1.5..-1.0),
                })
                .collect();
            let u0 = 0.2;
            let keep = safe_neurons(&p, u0, t, &input, kind);
            let spiking = keep
                .iter()
                .filter(|&&j| (0..t).any(|s| input[s * n + j] > 0.0))
                .count();
            assert!(
                keep.len() >= 40 && spiking >= 10,
                "{kind:?} {reset:?}: only {} safe neurons, {spiking} spiking",
                keep.len()
            );
            let r: Vec<f32> = (0..t * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let q: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let loss = |p: &StepParams, x: &[f32]| -> f64 {
                let f = forward_reference(p, u0, t, x);
                let mut l = 0.0;
                for &j in &keep {
                    l += q[j] as f64 * f.u_last[j] as f64;
                    for s in 0..t {
                        l += r[s * n + j] as f64 * f.output[s * n + j] as f64;
                    }
                }
                l
            };
            // Analytic: loss weights zero on discarded neurons.
            let mut g = vec![0.0; t * n];
            let mut gl = vec![0.0; n];
            for &j in &keep {
                gl[j] = q[j];
                for s in 0..t {
                    g[s * n + j] = r[s * n + j];
                }
            }
            let mut tape = Tape::new(SpikeStorage::Bits);
            forward_train(&p, u0, t, &mut input.clone(), &mut tape);
            let sums = backward(&p, u0, &tape, &mut g, Some(&gl));
            let d = Derived::from_raw(k, w);
            let (gk, gw) = (
                sums.g_theta * d.dtheta_dk,
                sums.g_decay * d.one_minus_lambda_f64,
            );

            let what = format!("{kind:?} {reset:?}");
            let central = |plus: f64, minus: f64| (plus - minus) / (2.0 * eps as f64);
            let fd_k = central(
                loss(&p_at(k + eps, w), &input),
                loss(&p_at(k - eps, w), &input),
            );
            let fd_w = central(
                loss(&p_at(k, w + eps), &input),
                loss(&p_at(k, w - eps), &input),
            );
            assert!(
                (gk - fd_k).abs() < 2e-3 * (1.0 + fd_k.abs()),
                "g_k {gk} vs {fd_k} {what}"
            );
            assert!(
                (gw - fd_w).abs() < 2e-3 * (1.0 + fd_w.abs()),
                "g_w {gw} vs {fd_w} {what}"
            );
            for &j in keep.iter().take(12) {
                for s in 0..t {
                    let i = s * n + j;
                    let mut xp = input.clone();
                    xp[i] += eps;
                    let mut xm = input.clone();
                    xm[i] -= eps;
                    let fd = central(loss(&p, &xp), loss(&p, &xm));
                    assert!(
                        (g[i] as f64 - fd).abs() < 2e-3,
                        "g_I[{s},{j}] {} vs {fd} {what}",
                        g[i]
                    );
                }
            }
        }
    }
}

/// Neurons whose M stays ≥ 0.1 away from θ and from the rectangle's edges at every step.
fn safe_neurons(
    p: &StepParams,
    u0: f32,
    t: usize,
    input: &[f32],
    kind: SurrogateKind,
) -> Vec<usize> {
    let n = input.len() / t;
    let f = forward_reference(p, u0, t, input);
    let th = p.theta;
    let edges = match kind {
        SurrogateKind::As => [th - 0.5, th + 0.5],
        _ => [0.5 * th, 1.5 * th],
    };
    (0..n)
        .filter(|&j| {
            (0..t).all(|s| {
                let m = f.membrane[s * n + j];
                [th, edges[0], edges[1]].iter().all(|e| (m - e).abs() > 0.1)
                    && (m < edges[0] || m > edges[1])
            })
        })
        .collect()
}
