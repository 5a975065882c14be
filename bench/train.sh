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
# PROFILE=dev reuses a debug build (burn's kernels are opt-level 3 there too, the glue is not).
PROFILE="${PROFILE:-release}"
cargo build --workspace --profile "$PROFILE" --example bench_train >&2
PROFILE_DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE_DIR/examples/bench_train"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || uname -m)"
run_burn() { RAYON_NUM_THREADS="$THREADS" "$BIN" --model cnn_lstm --lookback 128 --batch-size 256 "$@"; }
run_torch() { "$VENV/bin/python" bench/train_torch.py --threads "$THREADS" --lookback 128 --batch-size 256 "$@"; }
# Interleaved, twice each, so a noisy neighbour hits both alike; the best of each is kept.
B1=$(run_burn); T1=$(run_torch); B2=$(run_burn); T2=$(run_torch)
best() { python3 -c 'import json,sys; print(max(json.loads(l)["samples_per_s"] for l in sys.argv[1:]))' "$@"; }
BURN=$(best "$B1" "$B2"); TORCH=$(best "$T1" "$T2")
RATIO=$(python3 -c "print(f'{$BURN/$TORCH:.2f}')")
TORCH_VERSION=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["version"])' "$T1")
cat > bench/train.md <<MD
# Training throughput: cnn_lstm, lookback 128, batch 256, 8 features, $THREADS threads

Measured by \`make bench-train\` (bench/train.sh, cargo profile \`$PROFILE\`) on $(date -u +%Y-%m-%d), CPU: $CPU.
Each framework runs twice, interleaved, 3 warm-up + 20 timed steps (forward, backward, Adam);
the better run of each is shown.

| framework | samples/s |
|---|---|
| burn 0.21 (Flex backend, runtime's fused-gate LSTM) | $BURN |
| PyTorch $TORCH_VERSION (CPU) | $TORCH |
| ratio burn / PyTorch | $RATIO |

Raw lines:

\`\`\`
$B1
$B2
$T1
$T2
\`\`\`
MD
cat bench/train.md
