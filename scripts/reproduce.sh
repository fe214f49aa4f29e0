#!/usr/bin/env bash
# Regenerates docs/results/: the paper's ablation grids at CPU scale (see docs/results/README.md
# for the budget and what each grid shows). Finished cells are skipped and interrupted ones
# resumed, so the script can be re-run after a stop; with REPORT_ONLY=1 it only redraws the
# tables and plots from the runs already there.
#
#   MPSNN_DATA  data root (default ../shared/data)
#   RUNS        where the run folders go (default runs/repro; large, not committed)
#   JOBS        runs trained at the same time, one thread each (default 2)
#   STAGES      which grids, in order (default "mnist-mp nmnist-mp mnist nmnist cifar10")
#   MPSNN_BIN   a prebuilt binary (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MPSNN_DATA:-../shared/data}
RUNS=${RUNS:-runs/repro}
JOBS=${JOBS:-2}
STAGES=${STAGES:-"mnist-mp nmnist-mp mnist nmnist cifar10"}
if [[ -z "${MPSNN_BIN:-}" ]]; then
  cargo build --release --bin mpsnn
  MPSNN_BIN=./target/release/mpsnn
fi
EXTRA=()
[[ -n "${REPORT_ONLY:-}" ]] && EXTRA+=(--report-only)

stage() {
  local name=$1
  shift
  local start=$SECONDS
  nice -n 10 "$MPSNN_BIN" --threads 1 ablate "$@" --data-dir "$DATA" --jobs "$JOBS" \
    --out "$RUNS/$name" "${EXTRA[@]}"
  echo "stage $name: $((SECONDS - start)) s wall" | tee -a "$RUNS/wall.log"
  mkdir -p "docs/results/$name"
  cp "$RUNS/$name"/{grid.json,results.md,results.csv,per_timestep.csv,stability.csv} \
    "docs/results/$name/"
  if compgen -G "$RUNS/$name/plots/*.png" >/dev/null; then
    cp "$RUNS/$name"/plots/*.png "docs/results/$name/"
  fi
}

MNIST=(--dataset mnist --model mnist-cnn -T 1,4,2 --epochs 2 --seeds 3
  --thetas 0.1,0.5,1,2 --surrogates as,rs,trsg --limit-train 3000 --limit-test 2000)
NMNIST=(--dataset nmnist --model mnist-cnn -T 1,4,2 --epochs 3 --seeds 3
  --thetas 0.1,0.5,1,2 --surrogates as,rs,trsg)
CIFAR=(--dataset cifar10 --model vgg-small -T 1,2 --epochs 2 --seeds 2
  --limit-train 4000 --limit-test 1000)

# The MP-Init x TrSG grids first (cheapest per claim), then the frozen-theta grids, then CIFAR-10
# (the most expensive); a "-mp" stage trains into the same folder as the full stage, which
# reuses its runs. T = 4 (the paper's) is trained before T = 2.
mkdir -p "$RUNS"
for s in $STAGES; do
  case $s in
    mnist-mp) stage mnist "${MNIST[@]}" --grid mp-trsg ;;
    nmnist-mp) stage nmnist "${NMNIST[@]}" --grid mp-trsg ;;
    mnist) stage mnist "${MNIST[@]}" --grid mp-trsg,theta ;;
    nmnist) stage nmnist "${NMNIST[@]}" --grid mp-trsg,theta ;;
    cifar10) stage cifar10 "${CIFAR[@]}" --grid mp-trsg ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
