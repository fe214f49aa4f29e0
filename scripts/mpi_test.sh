#!/usr/bin/env bash
# Data-parallel training over MPI: installs Open MPI and libclang (the `mpi` crate generates its
# bindings with bindgen), lints the `mpi` feature's code, builds with `--features mpi` and runs
# tests/mpi.rs, which launches `mpirun --oversubscribe -np 2` on real MNIST and checks that both
# ranks end bit-identical, match a single process with the same global batch, and resume exactly.
#
# Only if the packages cannot be installed it prints "MPI SKIPPED: <reason>" and exits 0; any
# build or test failure fails the script.
#
# Env: MPSNN_DATA (datasets, default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export MPSNN_DATA="${MPSNN_DATA:-$root/../shared/data}"
# Open MPI refuses to start as root without both of these (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

skip() { echo "MPI SKIPPED: $*"; exit 0; }

have_libclang() {
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null || ! have_libclang; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null || skip "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            openmpi-bin libopenmpi-dev libclang-dev pkg-config >/dev/null \
            || skip "cannot install openmpi-bin / libopenmpi-dev / libclang-dev with apt-get"
    else
        skip "Open MPI or libclang missing and apt-get unavailable (not root?)"
    fi
fi
mpirun --version | head -n 1

cargo clippy --all-targets --features mpi -- -D warnings
cargo test --release --features mpi --test mpi -- --nocapture
echo "MPI OK"
