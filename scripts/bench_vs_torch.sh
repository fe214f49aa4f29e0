#!/usr/bin/env bash
# mpsnn against the PyTorch CPU SNN reference, alternately on this machine (see
# scripts/bench_vs_torch.py for what is measured and docs/perf.md for the results).
#
#   scripts/bench_vs_torch.sh [--rounds 3] [--models mnist-cnn,resnet19] [--threads 1,2] [--write]
#
# Environment:
#   TORCH_PYTHON  a python that has torch (default: .venv-torch/bin/python, created with
#                 `pip install torch` when missing)
#   TORCH_REF     the reference script torch_snn_bench.py (default: ../shared/ref/ next to the
#                 repository, where the project keeps it; it is not part of this repository)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

ref="${TORCH_REF:-$root/../shared/ref/torch_snn_bench.py}"
if [[ ! -f "$ref" ]]; then
    echo "reference script not found: $ref (set TORCH_REF)" >&2
    exit 1
fi

py="${TORCH_PYTHON:-}"
if [[ -z "$py" ]]; then
    py="$root/.venv-torch/bin/python"
    if ! "$py" -c "import torch" 2>/dev/null; then
        echo "installing PyTorch into .venv-torch (CPU use of the default wheel)" >&2
        python3 -m venv "$root/.venv-torch"
        "$root/.venv-torch/bin/pip" install --quiet torch
    fi
fi

cargo build --release --quiet --bin mpsnn
exec python3 "$root/scripts/bench_vs_torch.py" --mpsnn "$root/target/release/mpsnn" \
    --python "$py" --ref "$ref" "$@"
