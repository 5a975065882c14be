#!/usr/bin/env bash
# Background emulator for humans and the demo: `start` prints the exports, `stop` stops exactly
# the process `start` started (its pid is kept in .emulator/pid).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.emulator"
case "${1:-}" in
  start)
    "$root/scripts/venv.sh"
    mkdir -p "$dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "# emulator already running (pid $(cat "$dir/pid"))" >&2
    else
      rm -f "$dir/endpoint"
      nohup "$root/.venv/bin/python" "$root/scripts/emulator.py" --port-file "$dir/endpoint" \
        > "$dir/log" 2>&1 < /dev/null &
      echo $! > "$dir/pid"
      for _ in $(seq 1 100); do [ -f "$dir/endpoint" ] && break; sleep 0.1; done
      [ -f "$dir/endpoint" ] || { echo "emulator did not start; see $dir/log" >&2; exit 1; }
    fi
    echo "export AWS_ENDPOINT_URL=$(cat "$dir/endpoint")"
    echo "export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill "$pid" 2>/dev/null && echo "# emulator (pid $pid) stopped" >&2 || true
      rm -f "$dir/pid" "$dir/endpoint"
    fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
