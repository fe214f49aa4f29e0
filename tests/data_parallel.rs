//! Data-parallel training with ranks as threads ([`LocalGroup`], the same rank-order arithmetic
//! as MPI; the MPI launch itself is `tests/mpi.rs`). mnist-cnn on 8×8 inputs has both BN and
//! LIF layers, so every cross-rank path is exercised: synchronized BN forward and backward,
//! pooled MP-Init μ, averaged gradients and running statistics, loss weighting of unequal local
//! batches, sharded evaluation and the replica check.

use mpsnn::dist::local::LocalGroup;
use mpsnn::dist::SharedCollective;
use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::{Network, StateDict};
use mpsnn::train::data_parallel::DataParallel;
use mpsnn::train::trainer::StepStats;
use mpsnn::train::{evaluate, EvalStats, Loss, OptimizerConfig, TrainConfig, Trainer};
use mpsnn::{Result, Tensor};
use std::sync::Arc;

const T: usize = 2;
const STEPS: usize = 3;

/// Global batch `step` of `n` deterministic pseudo-random 8×8 images and labels in 0..3.
fn global_batch(step: usize, n: usize) -> (Vec<f32>, Vec<usize>) {
    let x = (0..n * 64)
        .map(|i| {
            let h = (i as u64 + 977 * step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (h % 1000) as f32 / 400.0
        })
        .collect();
    let y = (0..n).map(|i| (i * 7 + step) % 3).collect();
    (x, y)
}

/// Rows `start..start + len` of a global batch.
fn rows(x: &[f32], y: &[usize], start: usize, len: usize) -> (Tensor, Vec<usize>) {
    let data = x[start * 64..(start + len) * 64].to_vec();
    (
        Tensor::from_vec(&[len, 1, 8, 8], data).unwrap(),
        y[start..start + len].to_vec(),
    )
}

fn trainer() -> Trainer {
    let spec = build("mnist-cnn", &ModelOptions::new([1, 8, 8], 3)).unwrap();
    let mut config = TrainConfig::paper(T, 1);
    config.optimizer = OptimizerConfig::Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    Trainer::new(Network::new(spec, 11).unwrap(), config)
}

struct RankResult {
    state: StateDict,
    grads: StateDict,
    stats: StepStats,
}

fn grads(net: &mut Network) -> StateDict {
    let mut g = StateDict::new();
    net.visit_params(&mut |p| {
        g.insert(p.name.clone(), p.grad.clone());
    });
    g
}

/// Trains `STEPS` steps with one rank per entry of `sizes` (its local batch size; the global
/// batch is their sum, split in rank order).
fn train_ranks(sizes: &[usize], sync_bn: bool, lr: f32) -> Vec<RankResult> {
    let total: usize = sizes.iter().sum();
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(sizes.len())
            .into_iter()
            .map(|g| {
                s.spawn(move || {
                    let rank = mpsnn::dist::Collective::rank(&g);
                    let start: usize = sizes[..rank].iter().sum();
                    let mut tr = trainer();
                    let group: SharedCollective = Arc::new(g);
                    let mut dp = DataParallel::new(group, sync_bn);
                    dp.attach(&mut tr.net);
                    tr.data_parallel = Some(dp);
                    let mut stats = None;
                    for step in 0..STEPS {
                        let (x, y) = global_batch(step, total);
                        let (xr, yr) = rows(&x, &y, start, sizes[rank]);
                        stats = Some(tr.step(xr, &yr, lr, 1, step).unwrap());
                    }
                    RankResult {
                        state: tr.net.state_dict(),
                        grads: grads(&mut tr.net),
                        stats: stats.unwrap(),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn train_single(total: usize, lr: f32) -> RankResult {
    let mut tr = trainer();
    let mut stats = None;
    for step in 0..STEPS {
        let (x, y) = global_batch(step, total);
        let (xr, yr) = rows(&x, &y, 0, total);
        stats = Some(tr.step(xr, &yr, lr, 1, step).unwrap());
    }
    RankResult {
        state: tr.net.state_dict(),
        grads: grads(&mut tr.net),
        stats: stats.unwrap(),
    }
}

/// Worst `|a − b| / (1 + max|b|)` over the tensors of two dicts with the same names.
fn worst_diff(a: &StateDict, b: &StateDict) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(name, t)| {
            let s = &b[name];
            let scale = 1.0 + s.data().iter().fold(0f32, |m, v| m.max(v.abs()));
            t.max_abs_diff(s).unwrap() / scale
        })
        .fold(0.0, f32::max)
}

/// Synchronized BN: N ranks with local batches summing to B take the same steps as one process
/// with batch B (within float reassociation), for equal and unequal local batches, and the
/// replicas are bit-identical. μ is part of the state, so this also checks the pooled MP-Init.
#[test]
fn sync_bn_ranks_match_one_process_with_the_global_batch() {
    let single = train_single(8, 0.05);
    let mu = single.state["stem_lif.mu"].data()[0];
    assert!(
        mu != 0.0,
        "MP-Init must have moved μ for the check to mean anything"
    );
    for sizes in [&[4, 4][..], &[3, 5], &[2, 3, 3]] {
        let ranks = train_ranks(sizes, true, 0.05);
        for r in &ranks[1..] {
            assert!(r.state == ranks[0].state, "{sizes:?}: replicas differ");
        }
        let d = worst_diff(&ranks[0].state, &single.state);
        assert!(
            d < 1e-6,
            "{sizes:?}: parameters differ from one process by {d:e}"
        );
        let s = ranks[0].stats;
        assert_eq!((s.samples, s.correct), (8, single.stats.correct));
        assert!((s.loss - single.stats.loss).abs() < 1e-5, "{sizes:?}: loss");
    }
}

/// The averaged gradient itself (lr = 0 keeps the parameters at their initial values, so the
/// last step's gradients are directly comparable).
#[test]
fn averaged_gradient_is_the_global_batch_gradient() {
    let single = train_single(8, 0.0);
    for sizes in [&[4, 4][..], &[1, 7]] {
        let ranks = train_ranks(sizes, true, 0.0);
        let d = worst_diff(&ranks[0].grads, &single.grads);
        assert!(d < 1e-5, "{sizes:?}: gradient differs by {d:e}");
        assert!(ranks[1].grads == ranks[0].grads);
    }
    // Without synchronized BN the forward differs from one big batch, and so does the gradient.
    let per_rank = train_ranks(&[4, 4], false, 0.0);
    assert!(worst_diff(&per_rank[0].grads, &single.grads) > 1e-4);
}

/// Per-rank BN statistics (the default): the replicas still agree, their running statistics
/// being the average of what each rank's own update gives.
#[test]
fn per_rank_bn_running_statistics_are_averaged() {
    let ranks = train_ranks(&[4, 4], false, 0.0);
    assert!(ranks[0].state == ranks[1].state, "replicas differ");
    // With lr = 0 the parameters never move, so each half can be replayed alone.
    let halves: Vec<StateDict> = [0, 4]
        .iter()
        .map(|&start| {
            let mut tr = trainer();
            for step in 0..STEPS {
                let (x, y) = global_batch(step, 8);
                let (xr, yr) = rows(&x, &y, start, 4);
                tr.step(xr, &yr, 0.0, 1, step).unwrap();
            }
            tr.net.state_dict()
        })
        .collect();
    // The stem BN sees conv(input) with fixed weights; later BN layers see spikes that depend
    // on μ, which the ranks pool and the lone halves do not.
    for name in ["stem_bn.running_mean", "stem_bn.running_var"] {
        let got = ranks[0].state[name].data();
        for (i, &g) in got.iter().enumerate() {
            // Averaging is linear, so per-step averaging equals averaging the end states.
            let want = 0.5 * (halves[0][name].data()[i] + halves[1][name].data()[i]);
            assert!(
                (g - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{name}[{i}]: {g} vs {want}"
            );
        }
    }
}

/// Sharded evaluation: two ranks evaluating halves report what one process reports for the
/// whole set.
#[test]
fn sharded_evaluation_reduces_to_the_whole_set() {
    let (x, y) = global_batch(9, 10);
    let whole = {
        let mut net = trainer().net;
        let b = rows(&x, &y, 0, 10);
        evaluate(&mut net, T, Loss::MeanCe, std::iter::once(Ok(b))).unwrap()
    };
    let parts: Vec<EvalStats> = std::thread::scope(|s| {
        let hs: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|g| {
                let (x, y) = (&x, &y);
                s.spawn(move || {
                    let rank = mpsnn::dist::Collective::rank(&g);
                    let mut net = trainer().net;
                    let b: Result<_> = Ok(rows(x, y, rank * 3, if rank == 0 { 3 } else { 7 }));
                    let local = evaluate(&mut net, T, Loss::MeanCe, std::iter::once(b)).unwrap();
                    DataParallel::new(Arc::new(g), false).reduce_eval(local)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for p in &parts {
        assert_eq!(p.n, 10);
        assert_eq!(p.accuracy_per_timestep, whole.accuracy_per_timestep);
        assert!((p.loss - whole.loss).abs() < 1e-6);
    }
}

/// The replica check catches ranks whose parameters differ (here: one never received rank 0's).
#[test]
fn replica_check_reports_diverged_ranks() {
    let outcomes: Vec<(bool, bool)> = std::thread::scope(|s| {
        let hs: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|g| {
                s.spawn(move || {
                    let rank = mpsnn::dist::Collective::rank(&g);
                    let mut net = trainer().net;
                    let mut dp = DataParallel::new(Arc::new(g), false);
                    dp.attach(&mut net);
                    let same = dp.check_replicas(&mut net).is_ok();
                    net.visit_params(&mut |p| {
                        if rank == 1 && p.name == "fc.bias" {
                            p.value.data_mut()[0] += 1e-6;
                        }
                    });
                    (same, dp.check_replicas(&mut net).is_ok())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes, [(true, false), (true, false)]);
}

/// Without the `mpi` feature, a process an MPI launcher started as one of several refuses to
/// run (each would otherwise train alone and overwrite the others' files).
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_an_mpi_launch() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mpsnn"))
        .args(["data", "list"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--features mpi"), "{stderr}");
    let solo = std::process::Command::new(env!("CARGO_BIN_EXE_mpsnn"))
        .args(["data", "list"])
        .env("OMPI_COMM_WORLD_SIZE", "1")
        .output()
        .unwrap();
    assert!(
        solo.status.success(),
        "mpirun -np 1 is a plain single process"
    );
}
