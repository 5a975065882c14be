#!/usr/bin/env bash
# Training throughput on a GPU, burn's CUDA backend vs PyTorch on the same GPU in the same run,
# then one end-to-end `runtime train --device cuda` on generated data. Writes bench/train-gpu.md
# (or $RESULT). Usage on a machine with an NVIDIA driver:
#   make bench-train-gpu                       # builds with --features runtime/cuda
#   BENCH_TRAIN_BIN=... RUNTIME_BIN=... bench/train_gpu.sh   # binaries built elsewhere
# PyTorch: $PYTHON (default python3) must import torch with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULT="${RESULT:-bench/train-gpu.md}"
PYTHON="${PYTHON:-python3}"
if [ -z "${BENCH_TRAIN_BIN:-}" ] || [ -z "${RUNTIME_BIN:-}" ]; then
  cargo build --workspace --release --features runtime/cuda --bins --example bench_train >&2
  BENCH_TRAIN_BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_train"
  RUNTIME_BIN="${CARGO_TARGET_DIR:-target}/release/runtime"
fi
# burn compiles its kernels with NVRTC at run time; images often ship it outside the loader path.
if ! ldconfig -p | grep -q 'libnvrtc\.so'; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $("$PYTHON" -c 'import nvidia, os; print(" ".join(os.path.join(p, s, "lib") for p in nvidia.__path__ for s in os.listdir(p)))' 2>/dev/null); do
    ls "$d"/libnvrtc.so* >/dev/null 2>&1 && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
  done
fi
GPU="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo unknown)"
# First the fused CUDA kernels against burn's tensor-API cell on this GPU (logits and every
# gradient); the script stops here if they disagree.
CHECKS="$("$BENCH_TRAIN_BIN" --device cuda --check --lookback 7 --batch-size 3)
$("$BENCH_TRAIN_BIN" --device cuda --check --lookback 128 --batch-size 256)"
echo "$CHECKS" >&2
ARGS=(--lookback 128 --batch-size 256 --steps 50 --warmup 5)
run_burn() { "$BENCH_TRAIN_BIN" --device cuda --model cnn_lstm "${ARGS[@]}"; }
run_burn_unfused() { "$BENCH_TRAIN_BIN" --device cuda --model cnn_lstm --unfused "${ARGS[@]}"; }
run_torch() { "$PYTHON" -W ignore bench/train_torch.py --device cuda "${ARGS[@]}"; }
run_torch_nocudnn() { "$PYTHON" -W ignore bench/train_torch.py --device cuda --no-cudnn "${ARGS[@]}"; }
# The tensor-API cell once (the "before", ~10 s a run), the rest twice, interleaved.
B1=$(run_burn); T1=$(run_torch); N1=$(run_torch_nocudnn); U1=$(run_burn_unfused)
B2=$(run_burn); T2=$(run_torch); N2=$(run_torch_nocudnn)
best() { "$PYTHON" -c 'import json,sys; print(max(json.loads(l)["samples_per_s"] for l in sys.argv[1:]))' "$@"; }
BURN=$(best "$B1" "$B2"); UNFUSED=$(best "$U1"); TORCH=$(best "$T1" "$T2"); NOCUDNN=$(best "$N1" "$N2")
ratio() { "$PYTHON" -c "print(f'{$1/$2:.2f}')"; }
TORCH_VERSION=$("$PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["version"])' "$T1")

# End to end: the job's own command on generated data, timed, on the GPU.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RUNTIME_LOG=warn
"$RUNTIME_BIN" generate --output "$work/raw" --instrument 72089 --start-date 2024-01-01 \
  --end-date 2024-01-02 --freq 250ms --hours-per-day 1 >&2
"$RUNTIME_BIN" prepare --input "$work/raw" --output "$work/out" --instrument 72089 \
  --start-date 2024-01-01 --end-date 2024-01-02 --lookback 128 >&2
started=$(date +%s.%N)
"$RUNTIME_BIN" train --datasets "$work/out" --output "$work/out" --epochs 2 --batch-size 256 --device cuda >&2
E2E_S=$("$PYTHON" -c "import time; print(f'{time.time() - $started:.1f}')")
SUMMARY=$(find "$work/out" -name training_summary.json | head -1)

cat > "$RESULT" <<MD
# Training throughput on a GPU: cnn_lstm, lookback 128, batch 256, 8 features

Measured by \`make bench-train-gpu\` (bench/train_gpu.sh) on $(date -u +%Y-%m-%d), GPU: $GPU.
Each variant runs twice, interleaved, 5 warm-up + 50 timed steps (forward, backward, Adam, loss
read back to the host); the better run of each is shown.

| framework | samples/s | / PyTorch (cuDNN) |
|---|---|---|
| burn 0.21, CUDA backend, fused whole-sequence LSTM kernels (\`runtime train --device cuda\`) | $BURN | $(ratio "$BURN" "$TORCH") |
| burn 0.21, CUDA backend, tensor-API LSTM cell (before the kernels, \`--unfused\`) | $UNFUSED | $(ratio "$UNFUSED" "$TORCH") |
| PyTorch $TORCH_VERSION, cuDNN LSTM (its default) | $TORCH | 1.00 |
| PyTorch $TORCH_VERSION, cuDNN off (per-step LSTM cell kernels) | $NOCUDNN | $(ratio "$NOCUDNN" "$TORCH") |

End to end: \`runtime train --device cuda --epochs 2 --batch-size 256\`, three models (cnn_lstm,
lstm, gru) on one generated instrument-day set (lookback 128), kernel compilation included:
${E2E_S} s. Its training_summary.json:

\`\`\`json
$(cat "$SUMMARY")
\`\`\`

The fused kernels against the tensor-API cell on this GPU (largest difference relative to each
tensor's scale; logits in training and evaluation, then every parameter gradient):

\`\`\`
$CHECKS
\`\`\`

Raw lines:

\`\`\`
$B1
$B2
$U1
$T1
$T2
$N1
$N2
\`\`\`
MD
cat "$RESULT"
