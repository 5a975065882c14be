#!/usr/bin/env bash
# make bench-fanout: submitting 5,000 string ids against moto, `provision submit --ids` side by
# side with the boto3 submit scripts' loop (bench/fanout_boto3.py: one SubmitJob per batch, ids inline),
# in the same run. Results go to bench/fanout.md. SubmitJob is the call Batch throttles, so the
# table counts SubmitJob calls (the jobs each side created, read back) beside the wall time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${RUNS:-3}
work="$root/bench/work"
mkdir -p "$work"
if [ -z "${PROVISION:-}" ]; then
  cargo build --workspace >&2
  PROVISION="${CARGO_TARGET_DIR:-$root/target}/debug/provision"
fi
provision=$PROVISION

. "$root/bench/emulator.sh"
stack="--stack stacks/orderflow.toml --env dev"
"$provision" apply $stack --auto-approve > /dev/null
p=orderflow-dev
ids="$work/firms.txt"
seq -f "CIK%07g-firm" 1 5000 > "$ids"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# Jobs whose name starts with $1, as Batch lists them (every SubmitJob made one).
jobs_named() {
  "$root/.venv/bin/python" - "$1" <<'PY'
import sys, boto3
client = boto3.client("batch")
n = 0
for page in client.get_paginator("list_jobs").paginate(
        jobQueue="orderflow-dev-main",
        filters=[{"name": "JOB_NAME", "values": [sys.argv[1] + "*"]}]):
    n += len(page["jobSummaryList"])
print(n)
PY
}

# variant label | command; each run gets its own job-name prefix so its jobs can be counted.
run_variant() {
  local label=$1 kind=$2 per=$3 times=() count=0
  for r in $(seq 1 "$runs"); do
    local prefix="bench-$kind-$per-$r"
    t0=$(ms)
    case $kind in
      boto3) "$root/.venv/bin/python" bench/fanout_boto3.py "$ids" "$per" "$p-main" "$p-prepare" "$prefix" > /dev/null ;;
      separate) "$provision" submit $stack prepare --ids "$ids" --per-job "$per" --separate-jobs 2> /dev/null > "$work/out" ;;
      array) "$provision" submit $stack prepare --ids "$ids" --per-job "$per" 2> /dev/null > "$work/out" ;;
    esac
    t1=$(ms)
    times+=($((t1 - t0)))
    if [ "$kind" = boto3 ]; then count=$(jobs_named "$prefix"); else count=$(wc -l < "$work/out"); fi
  done
  last=$(printf '%s\n' "${times[@]}" | median)
  echo "| $label | $count | $last |"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }

{
  echo "# Fan-out of 5,000 ids (\`make bench-fanout\`)"
  echo
  echo "Against moto, $(date -u +%Y-%m-%d), median of $runs runs of each variant (run back to back);"
  echo "\`provision\` is the debug build (\`PROVISION=\` picks another). SubmitJob calls = jobs"
  echo "created; \`provision\` also makes 2 reads (job definition, queue) and, for an array or ids"
  echo "too large for the request, one PutObject of the manifest (\`provision/tests/it/operations.rs\`"
  echo "counts every request: 4 for the array of 100)."
  echo
  echo "| variant | SubmitJob calls | wall ms |"
  echo "|---|---|---|"
  run_variant "the boto3 submit scripts' loop, 1000 ids per job (5 jobs)" boto3 1000; loop5=$last
  run_variant "\`provision submit --ids --per-job 1000 --separate-jobs\` (5 jobs)" separate 1000; sep5=$last
  run_variant "the boto3 submit scripts' loop, 50 ids per job (100 jobs)" boto3 50; loop100=$last
  run_variant "\`provision submit --ids --per-job 50 --separate-jobs\` (100 jobs)" separate 50; sep100=$last
  run_variant "\`provision submit --ids --per-job 50\` (one array of 100 children, manifest)" array 50; array100=$last
  echo
  echo "Same 5 jobs: $(ratio "$loop5" "$sep5") faster than the loop. 100-way fan-out: separate jobs"
  echo "$(ratio "$loop100" "$sep100"), one array $(ratio "$loop100" "$array100") faster, with 1 SubmitJob instead of 100."
} > bench/fanout.md
cat bench/fanout.md
