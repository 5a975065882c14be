#!/usr/bin/env bash
# Training throughput, burn vs PyTorch, same machine, same run, same thread count; writes
# bench/train.md. Usage: bench/train.sh [THREADS]   (make bench-train)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-${THREADS:-2}}"
VENV=bench/.venv
# The default PyPI wheel (it bundles CUDA libraries, ~5 GB, and runs on the CPU as well); the
# CPU-only index is not reachable from every build machine.
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/pip" install --quiet torch
# PROFILE=dev reuses a debug build (burn's kernels are opt-level 3 there already), recompiles the
# runtime crate at opt-level 3 (its fused LSTM loops) and the hot-path crates without debug
# assertions (in gemm's microkernel alone they cost ~20 % of a step, as release has none), minutes
# instead of a full release build; a plain debug build keeps its own copies of those crates.
PROFILE="${PROFILE:-release}"
OPT=()
if [ "$PROFILE" = dev ]; then
  OPT=(--config profile.dev.package.runtime.opt-level=3)
  for p in runtime gemm gemm-common gemm-f32 burn-flex burn-autodiff burn-backend burn-tensor burn-std macerator; do
    OPT+=(--config "profile.dev.package.$p.debug-assertions=false" --config "profile.dev.package.$p.overflow-checks=false")
  done
fi
# FEATURES=runtime/cuda reuses a CUDA-enabled build (the CPU path is the same code).
[ -n "${FEATURES:-}" ] && OPT+=(--features "$FEATURES")
cargo build --workspace --profile "$PROFILE" "${OPT[@]}" --example bench_train >&2
PROFILE_DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE_DIR/examples/bench_train"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || uname -m)"
run_burn() { RAYON_NUM_THREADS="$THREADS" "$BIN" --model cnn_lstm --lookback 128 --batch-size 256 "$@"; }
run_torch() { "$VENV/bin/python" -W ignore bench/train_torch.py --threads "$THREADS" --lookback 128 --batch-size 256 "$@"; }
# Interleaved, twice each, so a noisy neighbour hits all alike; the best of each is kept.
# `--unfused` is the tensor-API LSTM cell the fused op replaced (the "before" figure).
B1=$(run_burn); U1=$(run_burn --unfused); T1=$(run_torch)
B2=$(run_burn); U2=$(run_burn --unfused); T2=$(run_torch)
best() { python3 -c 'import json,sys; print(max(json.loads(l)["samples_per_s"] for l in sys.argv[1:]))' "$@"; }
BURN=$(best "$B1" "$B2"); UNFUSED=$(best "$U1" "$U2"); TORCH=$(best "$T1" "$T2")
RATIO=$(python3 -c "print(f'{$BURN/$TORCH:.2f}')")
RATIO_UNFUSED=$(python3 -c "print(f'{$UNFUSED/$TORCH:.2f}')")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
TORCH_VERSION=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["version"])' "$T1")
cat > bench/train.md <<MD
# Training throughput: cnn_lstm, lookback 128, batch 256, 8 features, $THREADS threads

Measured by \`make bench-train\` (bench/train.sh, cargo profile \`$PROFILE\`) on $(date -u +%Y-%m-%d), CPU: $CPU.
Each variant runs twice, interleaved, 3 warm-up + 20 timed steps (forward, backward, Adam);
the better run of each is shown. Load average at the end: $LOAD (on a shared machine the
absolute figures are lower bounds; the ratios come from the same minutes).

| framework | samples/s | / PyTorch |
|---|---|---|
| burn 0.21, Flex backend, fused whole-sequence LSTM op (\`runtime train\` on the CPU) | $BURN | $RATIO |
| burn 0.21, Flex backend, tensor-API LSTM cell (before the fused op, \`--unfused\`) | $UNFUSED | $RATIO_UNFUSED |
| PyTorch $TORCH_VERSION (CPU, default PyPI wheel) | $TORCH | 1.00 |

Raw lines:

\`\`\`
$B1
$B2
$U1
$U2
$T1
$T2
\`\`\`
MD
cat bench/train.md
