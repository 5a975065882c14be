#!/usr/bin/env bash
# `make demo`: the order-flow pipeline end to end on the embedded emulator (moto):
# validate and apply the reference stack, build the jobs' image and push it (to a registry on
# loopback) so the job definitions pin its digest, generate ticks into its bucket, submit the jobs,
# run prepare and train locally with the environment their job definitions give them, show
# the results, destroy the stack. Nothing here talks to real AWS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
export PATH="$target/debug:$PATH"
stack=(--stack stacks/orderflow.toml --env dev)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=$(mktemp -d -t provision-demo.XXXXXX)
# A container registry on loopback stands in for the repository's ECR registry endpoint. Like
# ECR's, it asks for basic auth: user AWS and the password in the emulator's ECR token for its
# default account, so the push below gets in only with what GetAuthorizationToken answers.
registry_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
htpasswd -nbB AWS 123456789012-auth-token > "$work/htpasswd"
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$registry_port
auth:
  htpasswd:
    realm: demo
    path: $work/htpasswd
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
export PROVISION_REGISTRY=127.0.0.1:$registry_port

# A private emulator for this demo; it exits when this script does (its stdin closes). Its ECR
# reads what the loopback registry holds, as AWS's ECR API reads its registry.
coproc EMU { MOTO_ECR_REGISTRY=http://$PROVISION_REGISTRY exec .venv/bin/python scripts/emulator.py --watch-stdin; }
read -r line <&"${EMU[0]}"
export AWS_ENDPOINT_URL=${line#MOTO_ENDPOINT=}
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE
trap 'kill ${UI_PID:-} $EMU_PID $registry_pid 2>/dev/null || true; rm -rf "$work"' EXIT
step "emulator at $AWS_ENDPOINT_URL, registry at $PROVISION_REGISTRY"

step "provision validate ${stack[*]}"
provision validate "${stack[@]}"

step "provision plan ${stack[*]}"
provision plan "${stack[@]}"

step "provision apply ${stack[*]} --auto-approve"
provision apply "${stack[@]}" --auto-approve

# The release runtime when there is one; else the debug build `make demo` made.
runtime_bin=$target/release/runtime
[ -x "$runtime_bin" ] || runtime_bin=$target/debug/runtime
step "provision image build ${stack[*]} --binary $runtime_bin   (no Docker: OCI layers, reproducible)"
provision image build "${stack[@]}" --binary "$runtime_bin" --tag demo --out "$work/image"

step "provision image push ${stack[*]}   (to the loopback registry: PROVISION_REGISTRY=$PROVISION_REGISTRY)"
provision image push "${stack[@]}" --image "$work/image"

step "provision plan ${stack[*]}   (each job definition moves from the tag to the pushed digest)"
provision plan "${stack[@]}"
provision apply "${stack[@]}" --auto-approve >/dev/null

step "the job definitions' images"
.venv/bin/python - <<'PY'
import os
import boto3
batch = boto3.client("batch", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
for d in batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]:
    print("  %-28s %s" % ("%s:%d" % (d["jobDefinitionName"], d["revision"]), d["containerProperties"]["image"]))
PY

# The dashboard, up until the demo ends (PROVISION_UI_PORT picks its port; default any free one).
provision ui "${stack[@]}" --port "${PROVISION_UI_PORT:-0}" >"$work/ui-url" 2>"$work/ui.log" &
UI_PID=$!
for _ in $(seq 100); do [ -s "$work/ui-url" ] && break; sleep 0.1; done
if [ -s "$work/ui-url" ]; then
  step "dashboard: $(head -n1 "$work/ui-url")   (provision ui: the stack, its jobs, logs and results, up until the demo ends)"
else
  echo "provision ui did not start: $(cat "$work/ui.log")" >&2
fi

step "provision plan ${stack[*]} --detailed-exitcode   (a second plan has nothing to do)"
provision plan "${stack[@]}" --detailed-exitcode

step "provision output ${stack[*]} --json"
provision output "${stack[@]}" --json | tee "$work/outputs.json"
bucket=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["buckets"]["data"])' "$work/outputs.json")
root_uri="s3://$bucket/ml-pipeline"
instruments=72089,72090

step "runtime generate: two instruments, two days of synthetic ticks into s3://$bucket/raw"
runtime generate --output "s3://$bucket/raw" --instrument $instruments \
  --start-date 2024-01-01 --end-date 2024-01-02 --freq 250ms --hours-per-day 1

step "provision submit prepare, then train depending on it (the emulator runs no containers)"
prepare_id=$(provision submit "${stack[@]}" prepare)
train_id=$(provision submit "${stack[@]}" train --depends-on "$prepare_id")
provision status "$prepare_id" "$train_id"

step "provision run-local prepare: the job's command and environment, on this machine"
provision run-local "${stack[@]}" prepare -- runtime prepare \
  --input "s3://$bucket/raw" --output "$root_uri" --instrument $instruments \
  --start-date 2024-01-01 --end-date 2024-01-02 --lookback 32 --undersample

step "provision run-local train: CNN-LSTM, LSTM and GRU on every prepared dataset"
provision run-local "${stack[@]}" train -- runtime train \
  --datasets "$root_uri" --output "$root_uri" --epochs 3 --batch-size 128 --device cpu

step "results under $root_uri/models"
runtime collect --summaries --input "$root_uri/models" --output -

step "provision destroy ${stack[*]} --auto-approve"
provision destroy "${stack[@]}" --auto-approve
step "done"
