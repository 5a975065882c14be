# Sourced by the benchmark scripts: a private moto for this run, stopped on exit, and the
# AWS environment that points the SDKs at it. Needs $root (the repository) and $work.
"$root/scripts/venv.sh"
rm -f "$work/endpoint"
"$root/.venv/bin/python" "$root/scripts/emulator.py" --port-file "$work/endpoint" > "$work/emulator.log" 2>&1 &
emulator=$!
trap 'kill $emulator 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -f "$work/endpoint" ] && break; sleep 0.1; done
export AWS_ENDPOINT_URL=$(cat "$work/endpoint") AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
