#!/usr/bin/env bash
# The measurements behind docs/scaling.md: training throughput of mnist-cnn on real MNIST with
# 1 process vs 2 MPI ranks (one thread each), the time per step spent in collectives, and the
# allreduce timings of examples/mpi_allreduce.rs. Needs a `--features mpi` build (see
# scripts/mpi_test.sh for the packages). Prints one line per run: what, images/s, comm/step.
#
# Env: MPSNN_DATA (datasets, default ../shared/data), REPEAT (rounds, default 2),
# LIMIT (training images, default 2048), T (timesteps, default 4), MPIRUN_FLAGS (default
# --oversubscribe; e.g. "--bind-to core" to pin each rank to a core).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export MPSNN_DATA="${MPSNN_DATA:-$root/../shared/data}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
repeat="${REPEAT:-2}"
limit="${LIMIT:-2048}"
t="${T:-4}"
read -r -a mpirun_flags <<< "${MPIRUN_FLAGS:---oversubscribe}"
cargo build --release --features mpi --bin mpsnn --example mpi_allreduce 2>&1 | tail -n 1
bin="$root/target/release/mpsnn"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run LABEL RANKS THREADS BATCH [extra...]: trains one epoch, prints images/s of the training
# part (metrics.jsonl) and the collective time per step.
run() {
    local label=$1 ranks=$2 threads=$3 batch=$4
    shift 4
    local out="$work/$label"
    rm -rf "$out"
    local cmd=("$bin" --threads "$threads" train --dataset mnist --model mnist-cnn
        --limit-train "$limit" --limit-test 256 --epochs 1 -T "$t" --batch-size "$batch"
        --out "$out" "$@")
    local json
    if [ "$ranks" -gt 1 ]; then
        json=$(mpirun "${mpirun_flags[@]}" -np "$ranks" "${cmd[@]}" 2>/dev/null | tail -n 1)
    else
        json=$("${cmd[@]}" 2>/dev/null | tail -n 1)
    fi
    local secs
    secs=$(sed -n 's/.*"train_seconds":\([0-9.e-]*\).*/\1/p' "$out/metrics.jsonl")
    local comm grad
    comm=$(echo "$json" | sed -n 's/.*"comm_seconds_per_step":\([0-9.e-]*\).*/\1/p')
    grad=$(echo "$json" | sed -n 's/.*"gradient_allreduce_seconds_per_step":\([0-9.e-]*\).*/\1/p')
    awk -v l="$label" -v n="$limit" -v s="$secs" -v c="${comm:-0}" -v g="${grad:-0}" \
        'BEGIN { printf "%-34s %7.1f images/s  train %6.2f s  comm/step %6.2f ms (gradients %5.2f ms)\n", l, n / s, s, c * 1000, g * 1000 }'
}

for i in $(seq "$repeat"); do
    echo "-- round $i (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    run "1 process x 1 thread, batch 64" 1 1 64
    run "1 process x 1 thread, batch 32" 1 1 32
    run "2 ranks x 1 thread, 32 each (64)" 2 1 32
    run "2 ranks x 1 thread, 64 each (128)" 2 1 64
    run "2 ranks sync-BN, 32 each (64)" 2 1 32 --sync-bn
    run "1 process x 2 threads, batch 64" 1 2 64
done
echo "-- collectives (examples/mpi_allreduce.rs, 2 ranks)"
mpirun "${mpirun_flags[@]}" -np 2 "$root/target/release/examples/mpi_allreduce"
