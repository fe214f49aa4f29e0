#!/usr/bin/env bash
# Trained-model parity of the micro export (issue #5, "Prove it"), from a checkpoint:
#   - f32 blob: every prediction equals the std network's eval on the whole test set;
#   - int8 blob: at most 0.3 points of accuracy below the f32 blob;
# then (MNIST) both blobs on the emulated Cortex-M4 for sizes and instruction counts.
# Usage: scripts/micro_parity.sh CHECKPOINT [DATASET=mnist]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt="${1:?usage: scripts/micro_parity.sh CHECKPOINT [DATASET]}"
dataset="${2:-mnist}"
out="target/micro-parity"
cargo run --quiet --release --example micro_parity -- --checkpoint "$ckpt" --dataset "$dataset" --out "$out"
if [ "$dataset" = mnist ]; then
    MCU_BLOB_F32="$out/model-f32.mpsnn" MCU_BLOB_INT8="$out/model-int8.mpsnn" bash scripts/mcu.sh
fi
