#!/usr/bin/env bash
# `make bench-prepare`: `runtime prepare` vs the same feature computation in Python polars
# (bench/prepare_polars.py) on 1e6 and 1e7 generated rows, both on 2 threads, zstd Parquet out.
# Wall time and peak RSS from /usr/bin/time -v; results in bench/prepare.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
runtime=${RUNTIME_BIN:-$target/release/runtime}
work=bench/work
venv=bench/.venv
export POLARS_MAX_THREADS=2 RUNTIME_LOG=warn
repeats=${REPEATS:-2}

[ -x "$runtime" ] || { echo "build first: cargo build --workspace --release" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check polars
fi
py_polars=$("$venv/bin/python" -c 'import polars; print(polars.__version__)')
mkdir -p "$work"

# name rows freq hours_per_day end_date
sizes=("1e6 1000000 10ms 2.777778 2024-01-01" "1e7 10000000 10ms 13.888889 2024-01-02")

measure() { # label log command...
  local log=$2; shift 2
  /usr/bin/time -v "$@" > /dev/null 2> "$log"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  echo "$wall $rss"
}

rows_md=""
for spec in "${sizes[@]}"; do
  read -r name rows freq hours end <<< "$spec"
  raw="$work/raw-$name"
  if [ ! -f "$raw/instrument=1/_SUCCESS" ]; then
    "$runtime" generate --output "$raw" --instrument 1 --start-date 2024-01-01 --end-date "$end" \
      --freq "$freq" --hours-per-day "$hours" > /dev/null
  fi
  for tool in rust python; do
    best_wall=""; max_rss=0
    for _ in $(seq "$repeats"); do
      out="$work/out-$name-$tool"
      rm -rf "$out"
      if [ "$tool" = rust ]; then
        read -r wall rss < <(measure rust "$work/time-$name-$tool.log" "$runtime" prepare --input "$raw" --output "$out" \
          --instrument 1 --start-date 2024-01-01 --end-date "$end")
      else
        read -r wall rss < <(measure python "$work/time-$name-$tool.log" "$venv/bin/python" bench/prepare_polars.py \
          --input "$raw" --output "$out" --instrument 1 --start-date 2024-01-01 --end-date "$end")
      fi
      if [ -z "$best_wall" ] || awk "BEGIN{exit !($wall < $best_wall)}"; then best_wall=$wall; fi
      [ "$rss" -gt "$max_rss" ] && max_rss=$rss
    done
    eval "wall_$tool=$best_wall; rss_$tool=$max_rss"
  done
  # The two outputs must agree: same rows, labels, flags; features to rounding.
  agree=$("$venv/bin/python" - "$work/out-$name-rust" "$work/out-$name-python" <<'PY'
import sys, polars as pl
a, b = sys.argv[1], sys.argv[2]
worst = 0.0
for split in ("train", "validation", "test"):
    p = f"datasets/instrument=1/start_date=2024-01-01"
    import glob
    fa = glob.glob(f"{a}/{p}/*/{split}.parquet")[0]; fb = glob.glob(f"{b}/{p}/*/{split}.parquet")[0]
    x, y = pl.read_parquet(fa), pl.read_parquet(fb)
    assert x.height == y.height, (split, x.height, y.height)
    assert (x["label"] == y["label"]).all() and (x["sample"] == y["sample"]).all()
    assert (x["ts"] == y["ts"]).all()
    for c in ["ret_1", "spread", "obi", "ofi", "signed_volume", "ofi_sum", "tfi", "vol"]:
        worst = max(worst, ((x[c] - y[c]).abs() / (1 + y[c].abs())).max())
print(f"{worst:.1e}")
PY
)
  rps_rust=$(awk "BEGIN{printf \"%.0f\", $rows/$wall_rust}")
  rps_py=$(awk "BEGIN{printf \"%.0f\", $rows/$wall_python}")
  ratio=$(awk "BEGIN{printf \"%.2f\", $wall_python/$wall_rust}")
  rss_ratio=$(awk "BEGIN{printf \"%.2f\", $rss_rust/$rss_python}")
  rows_md+="| $name | $wall_rust | $wall_python | $rps_rust | $rps_py | **${ratio}x** | $((rss_rust/1024)) | $((rss_python/1024)) | $rss_ratio | $agree |"$'\n'
  echo "$name: rust ${wall_rust}s ${rss_rust}KiB, python ${wall_python}s ${rss_python}KiB, speed-up ${ratio}x, max rel diff $agree" >&2
done

cat > bench/prepare.md <<MD
# \`runtime prepare\` vs Python polars

\`make bench-prepare\` (bench/prepare.sh). One instrument of \`runtime generate\` ticks (10 ms events),
hive-partitioned Parquet on local disk; both tools compute the data contract of docs/design.md
(features, labels, split, scaler, \`sample\`) and write zstd Parquet (level 1, Float32 features),
scaler.json and preparation_config.json.
\`POLARS_MAX_THREADS=2\` for both. Best wall time of $repeats runs, peak RSS from \`/usr/bin/time -v\`.
Python: polars $py_polars (bench/prepare_polars.py, bench/.venv). Rust: release build of this
repository (polars 0.55). Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), shared with other builds while measured
($(date -u +%Y-%m-%d)).

| rows | rust s | python s | rust rows/s | python rows/s | speed-up | rust peak MiB | python peak MiB | RSS ratio | max rel. diff of features |
|---|---|---|---|---|---|---|---|---|---|
$rows_md
"Max rel. diff" compares the two tools' train/validation/test files: identical rows, timestamps,
labels and \`sample\` flags; features differ at most by that relative amount (floating-point
rounding).
MD
cat bench/prepare.md
