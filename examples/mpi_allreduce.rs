//! Times the collectives of one data-parallel step over MPI, for the parameter counts of the
//! built-in models: the gradient allreduce (all trainable parameters as f32, the volume
//! `docs/scaling.md` models) and the small f64 allreduces of the per-layer hooks (MP-Init μ,
//! synchronized BN statistics), whose cost is latency.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_allreduce
//! mpirun -np 2 target/release/examples/mpi_allreduce
//! ```
//! Rank 0 prints one JSON line per buffer: median seconds per call over the timed repetitions,
//! for mpsnn's deterministic allreduce and, as the reference, the MPI library's own
//! `MPI_Allreduce` (whose float summation order is implementation-defined).

use mpi::collective::SystemOperation;
use mpi::traits::*;
use mpsnn::dist::mpi::MpiRuntime;
use mpsnn::dist::Collective;
use mpsnn::models::{build, ModelOptions};
use mpsnn::nn::Network;
use std::time::Instant;

/// Median wall time of `reps` calls of `f` after 2 warm-up calls, all ranks in lockstep.
fn median_seconds(world: &dyn Collective, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        world.barrier();
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn main() {
    let rt = MpiRuntime::init().expect("MPI could not be initialized");
    let world = rt.world();
    let n = world.size();
    let report = |what: &str, elements: usize, bytes: usize, seconds: f64, reference: f64| {
        if world.is_root() {
            // Bytes each rank sends (and receives) in the scatter + gather algorithm.
            let moved = 2.0 * (n - 1) as f64 / n as f64 * bytes as f64;
            println!(
                "{}",
                serde_json::json!({
                    "buffer": what, "ranks": n, "elements": elements, "bytes": bytes,
                    "seconds": seconds, "bus_gb_per_s": moved / seconds / 1e9,
                    "mpi_allreduce_seconds": reference,
                })
            );
        }
    };
    let comm = mpi::topology::SimpleCommunicator::world();
    let mut small = [1.0f64, 2.0];
    let t = median_seconds(world.as_ref(), 200, || world.allreduce_sum_f64(&mut small));
    let mut out = small;
    let r = median_seconds(world.as_ref(), 200, || {
        comm.all_reduce_into(&small[..], &mut out[..], SystemOperation::sum())
    });
    report("hook (2 x f64)", 2, 16, t, r);
    let mut stats = vec![1.0f64; 2 * 512 + 1];
    let t = median_seconds(world.as_ref(), 100, || world.allreduce_sum_f64(&mut stats));
    let mut out = stats.clone();
    let r = median_seconds(world.as_ref(), 100, || {
        comm.all_reduce_into(&stats[..], &mut out[..], SystemOperation::sum())
    });
    report(
        "sync-BN stats (512 channels)",
        stats.len(),
        stats.len() * 8,
        t,
        r,
    );
    for (name, input) in [
        ("mnist-cnn", [1, 28, 28]),
        ("vgg-small", [3, 32, 32]),
        ("resnet19", [3, 32, 32]),
    ] {
        let spec = build(name, &ModelOptions::new(input, 10)).expect("built-in model");
        let params = Network::new(spec, 0).expect("model").param_count();
        let mut grads = vec![1e-3f32; params + 3];
        let reps = if params > 1_000_000 { 7 } else { 50 };
        let t = median_seconds(world.as_ref(), reps, || world.allreduce_sum_f32(&mut grads));
        let mut out = grads.clone();
        let r = median_seconds(world.as_ref(), reps, || {
            comm.all_reduce_into(&grads[..], &mut out[..], SystemOperation::sum())
        });
        report(
            &format!("{name} gradients"),
            grads.len(),
            grads.len() * 4,
            t,
            r,
        );
    }
}
