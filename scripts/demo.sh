#!/usr/bin/env bash
# `make demo`: the main job, end to end, on the embedded emulator. Grows with every issue.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
provision=target/debug/provision

# A private emulator for this demo, stopped on any exit.
coproc EMU { exec .venv/bin/python scripts/emulator.py --watch-stdin; }
read -r line <&"${EMU[0]}"
export AWS_ENDPOINT_URL=${line#MOTO_ENDPOINT=}
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE
trap 'kill $EMU_PID 2>/dev/null || true' EXIT
echo "== emulator at $AWS_ENDPOINT_URL"

echo "== provision validate --stack stacks/orderflow.toml --env dev"
$provision validate --stack stacks/orderflow.toml --env dev
