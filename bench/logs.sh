#!/usr/bin/env bash
# `make bench-logs`: the requests `provision logs ARRAY_ID --follow` sends to read an array job of
# 100 children, against moto through the test proxy that counts them, side by side with a
# per-job script (describe each child, read its stream: the seeds' boto3 loops). The measurement
# is the integration test `following_a_hundred_children_takes_a_handful_of_calls`; its counts
# land in bench/logs.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
line=$(cargo test --workspace --test it -- --exact \
    operations_logs::following_a_hundred_children_takes_a_handful_of_calls --nocapture 2>&1 \
    | grep '^bench-logs:')
tool=$(sed -n 's/.*following 100 children: \([0-9]*\) calls.*/\1/p' <<<"$line")
script=$(sed -n 's/.*per-job script: \([0-9]*\) calls.*/\1/p' <<<"$line")
ratio=$(awk -v a="$script" -v b="$tool" 'BEGIN { printf "%.0f", a / b }')
cat > bench/logs.md <<MD
# Reading the logs of an array job of 100 children (\`make bench-logs\`)

Requests sent to read every child's log once, counted by the test proxy in front of moto
(\`testkit::faults::FaultProxy\`), $(date -u +%Y-%m-%d):

| reader | requests | per 5 s round while following |
|---|---|---|
| \`provision logs ARRAY_ID --follow\` | $tool | 1 DescribeJobs per 100 running children + 1 FilterLogEvents per 100 streams |
| per-job script (DescribeJobs and GetLogEvents for each child) | $script | 200 |
| ratio | ${ratio}x fewer | |

A follow round stays under 5 requests a second on average, all services together
(\`docs/operations.md\`); the per-job script sends 200 requests every round.
MD
cat bench/logs.md
