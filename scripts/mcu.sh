#!/usr/bin/env bash
# Builds the Cortex-M4F example firmware (no_std/firmware) with an exported MNIST model and real
# test images, runs it under QEMU (mps2-an386), and fails if any prediction differs from the
# host runtime. Does it for f32 and int8 weights, linked against the 256K-flash/64K-RAM budget
# map, and prints flash/RAM sizes and instructions per inference.
#
# Installs what it needs (qemu-system-arm, binutils-arm-none-eabi, the thumbv7em target). Only
# if that is impossible it prints "MCU SKIPPED: <reason>" and exits 0.
#
# Env: MPSNN_DATA (datasets, default ../shared/data), MCU_BLOB_F32 / MCU_BLOB_INT8 (use these
# exported blobs, e.g. from `mpsnn export --checkpoint`, instead of training mnist-cnn briefly),
# MCU_IMAGES (images per run, default 8), MPSNN_MEMORY (budget | full; default budget).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export MPSNN_DATA="${MPSNN_DATA:-$root/../shared/data}"
n="${MCU_IMAGES:-8}"
memory="${MPSNN_MEMORY:-budget}"
target=thumbv7em-none-eabihf

skip() { echo "MCU SKIPPED: $*"; exit 0; }

if ! command -v qemu-system-arm >/dev/null || ! command -v arm-none-eabi-size >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null || skip "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            qemu-system-arm binutils-arm-none-eabi >/dev/null \
            || skip "cannot install qemu-system-arm / binutils-arm-none-eabi with apt-get"
    else
        skip "qemu-system-arm / arm-none-eabi-size missing and apt-get unavailable (not root?)"
    fi
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target" || skip "rustup target add $target failed (no access to the Rust distribution server?)"
fi

work="$root/target/mcu"
mkdir -p "$work"

# Without blobs from the caller, train the real mnist-cnn briefly with the CLI (a few thousand
# images, about a minute) and export it in both precisions: the firmware then runs the same
# kind of model a user deploys.
if [ -z "${MCU_BLOB_F32:-}" ] && [ -z "${MCU_BLOB_INT8:-}" ]; then
    echo "== training mnist-cnn for the firmware (3000 MNIST images, 1 epoch, T = 4)"
    cargo build --quiet --release --bin mpsnn
    rm -rf "$work/run"
    ./target/release/mpsnn train --dataset mnist --model mnist-cnn --epochs 1 --timesteps 4 \
        --limit-train 3000 --limit-test 1000 --data-dir "$MPSNN_DATA" --out "$work/run" | tail -1
    ./target/release/mpsnn export --checkpoint "$work/run/last.ckpt" --out "$work/mnist-cnn-f32.mpsnn"
    ./target/release/mpsnn export --checkpoint "$work/run/last.ckpt" --out "$work/mnist-cnn-int8.mpsnn" --int8
    export MCU_BLOB_F32="$work/mnist-cnn-f32.mpsnn" MCU_BLOB_INT8="$work/mnist-cnn-int8.mpsnn"
fi
echo "== mpsnn-micro alone for $target (core only: no std, no allocator)"
cargo build --quiet --release -p mpsnn-micro --target "$target"
# The runtime is portable across Cortex-M profiles: M0/M0+ (no FPU, no division instruction)
# and M33. These extra targets are best effort: a missing one is reported, not fatal.
for extra in thumbv6m-none-eabi thumbv8m.main-none-eabihf; do
    if rustup target list --installed 2>/dev/null | grep -qx "$extra" || rustup target add "$extra" >/dev/null 2>&1; then
        cargo build --quiet --release -p mpsnn-micro --target "$extra"
        echo "mpsnn-micro builds for $extra"
    else
        echo "MCU NOTE: could not install $extra; its build was not checked"
    fi
done
fail=0
summary=()
for prec in f32 int8; do
    assets="$work/assets-$prec"
    blob_var="MCU_BLOB_$(echo "$prec" | tr a-z A-Z)"
    args=(--out "$assets" --n "$n" --eval-n "$n")
    if [ -n "${!blob_var:-}" ]; then
        args+=(--blob "${!blob_var}")
    elif [ "$prec" = int8 ]; then
        args+=(--int8)
    fi
    echo "== $prec: assets"
    cargo run --quiet --release --example micro_assets -- "${args[@]}"
    echo "== $prec: firmware ($memory memory map)"
    ( cd no_std/firmware && MPSNN_ASSETS="$assets" MPSNN_MEMORY="$memory" \
        CARGO_TARGET_DIR="$work/fw-$prec" cargo build --quiet --release )
    if [ "$prec" = f32 ]; then
        # The firmware is outside the workspace, so the workspace lint does not see it.
        ( cd no_std/firmware && MPSNN_ASSETS="$assets" CARGO_TARGET_DIR="$work/fw-lint" \
            cargo clippy --quiet --release -- -D warnings )
    fi
    elf="$work/fw-$prec/$target/release/mpsnn-micro-firmware"
    read -r text data bss _ < <(arm-none-eabi-size "$elf" | tail -1)
    echo "== $prec: QEMU"
    set +e
    out=$(timeout 600 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
        -semihosting-config enable=on,target=native -icount shift=0 -kernel "$elf" 2>&1)
    rc=$?
    set -e
    echo "$out"
    if [ $rc -ne 0 ]; then
        echo "MCU FAILED ($prec): QEMU exit code $rc"
        fail=1
        continue
    fi
    result=$(echo "$out" | grep '^MCU RESULT:' || true)
    stack=$(echo "$result" | sed -n 's/.*stack_bytes=\([0-9]*\).*/\1/p')
    instr=$(echo "$result" | sed -n 's/.*instructions_per_inference_mean=\([0-9]*\).*/\1/p')
    summary+=("$prec: flash (text+rodata+data) $((text + data)) B, RAM data+bss $((data + bss)) B + stack ${stack:-?} B = $((data + bss + ${stack:-0})) B, ${instr:-?} instructions/inference")
done
echo
echo "== MCU summary (memory map: $memory; instructions counted by QEMU -icount, not M4 cycles)"
for line in "${summary[@]}"; do echo "$line"; done
if [ $fail -ne 0 ]; then
    echo "MCU FAILED"
    exit 1
fi
echo "MCU OK"
