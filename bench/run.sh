#!/usr/bin/env bash
# make bench: a no-op `provision plan` of the reference stack against moto, side by side with
# `cdk synth` of the same stack as an AWS CDK app (bench/cdk), in the same run. Results go to
# bench/results.md. Needs node/npm for the CDK side (installed under bench/work on first run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${RUNS:-5}
work="$root/bench/work"
mkdir -p "$work"
# A release build of the provision binary alone (PROVISION=path skips the build).
if [ -z "${PROVISION:-}" ]; then
  cargo build --release --bin provision >&2
  PROVISION="${CARGO_TARGET_DIR:-$root/target}/release/provision"
fi
provision=$PROVISION

. "$root/bench/emulator.sh"
stack="--stack stacks/orderflow.toml --env dev"
"$provision" apply $stack --auto-approve > /dev/null
"$provision" plan $stack --detailed-exitcode > /dev/null   # exit 0: a no-op plan

ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Interleaved, so a noisy neighbour hits both kinds of plan alike.
plan_times=(); state_times=()
for _ in $(seq 1 "$runs"); do
  t0=$(ms); "$provision" plan $stack --detailed-exitcode > /dev/null; t1=$(ms)
  plan_times+=($((t1 - t0)))
  t0=$(ms); "$provision" plan $stack --refresh=false --detailed-exitcode > /dev/null; t1=$(ms)
  state_times+=($((t1 - t0)))
done

if [ ! -x "$work/cdk/node_modules/.bin/cdk" ]; then
  mkdir -p "$work/cdk"
  cp bench/cdk/package.json "$work/cdk/"
  (cd "$work/cdk" && npm install --no-audit --no-fund --silent >&2)
fi
cp bench/cdk/app.js bench/cdk/cdk.json "$work/cdk/"
synth_times=()
for _ in $(seq 1 "$runs"); do
  t0=$(ms); (cd "$work/cdk" && CDK_DISABLE_VERSION_CHECK=1 ./node_modules/.bin/cdk synth --quiet --no-notices > /dev/null); t1=$(ms)
  synth_times+=($((t1 - t0)))
done

plan_ms=$(printf '%s\n' "${plan_times[@]}" | median)
state_ms=$(printf '%s\n' "${state_times[@]}" | median)
synth_ms=$(printf '%s\n' "${synth_times[@]}" | median)
ratio() { awk -v s="$synth_ms" -v p="$1" 'BEGIN { printf "%.1f", s / (p > 0 ? p : 1) }'; }
{
  # Both sides are CPU-bound on a shared machine: the load says how comparable two runs are.
  echo "# No-op plan vs cdk synth ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), median of $runs, $provision)"
  echo
  echo "| | median ms | runs (ms) |"
  echo "|---|---|---|"
  echo "| \`provision plan\` (no-op; reads every live resource from moto, ~33 requests) | $plan_ms | ${plan_times[*]} |"
  echo "| \`provision plan --refresh=false\` (no-op; stack facts + state only, 6 requests; like cdk synth it reads no resource) | $state_ms | ${state_times[*]} |"
  echo "| \`cdk synth\` (same stack, no AWS call) | $synth_ms | ${synth_times[*]} |"
  echo
  echo "provision plan is $(ratio "$plan_ms")x faster than cdk synth; plan --refresh=false $(ratio "$state_ms")x (target: 20x)."
  echo "A refreshing plan is bound by moto: each request costs ~1-3 ms of Python CPU (the state query ~8 ms), and the emulator (scripts/emulator.py) answers one at a time."
} | tee bench/results.md
