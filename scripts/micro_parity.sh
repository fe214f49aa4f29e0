#!/usr/bin/env bash
# Trained-model parity of the micro export (issue #5, "Prove it"): exports CHECKPOINT as f32 and
# int8, runs both blobs over the whole test set with `mpsnn infer` (the mpsnn-micro runtime on
# the host), and checks
#   - f32: every prediction equals `mpsnn eval` on the checkpoint (agreement_with_eval == 1);
#   - int8: accuracy at most 0.3 points below the f32 blob's.
# Then runs the two blobs on the emulated Cortex-M4 (scripts/mcu.sh) for sizes and instruction
# counts. Usage: scripts/micro_parity.sh CHECKPOINT [DATASET=mnist]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt="${1:?usage: scripts/micro_parity.sh CHECKPOINT [DATASET]}"
dataset="${2:-mnist}"
out="target/micro-parity"
mkdir -p "$out"
cargo build --quiet --release --bin mpsnn
mpsnn=target/release/mpsnn
"$mpsnn" export --checkpoint "$ckpt" --out "$out/model-f32.mpsnn"
"$mpsnn" export --checkpoint "$ckpt" --out "$out/model-int8.mpsnn" --int8
f32=$("$mpsnn" infer --model "$out/model-f32.mpsnn" --dataset "$dataset" | tail -1)
int8=$("$mpsnn" infer --model "$out/model-int8.mpsnn" --dataset "$dataset" | tail -1)
echo "f32:  $f32"
echo "int8: $int8"
python3 - "$f32" "$int8" <<'PY'
import json, sys
f, q = json.loads(sys.argv[1]), json.loads(sys.argv[2])
loss = 100 * (f["accuracy"] - q["accuracy"])
print(f"int8 accuracy loss: {loss:.2f} points (f32 {100*f['accuracy']:.2f} %, int8 {100*q['accuracy']:.2f} %)")
ok = f["agreement_with_eval"] == 1.0 and loss <= 0.3
print("PARITY OK" if ok else "PARITY FAILED")
sys.exit(0 if ok else 1)
PY
if [ "$dataset" = mnist ]; then
    MCU_BLOB_F32="$out/model-f32.mpsnn" MCU_BLOB_INT8="$out/model-int8.mpsnn" bash scripts/mcu.sh
fi
