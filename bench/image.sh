#!/usr/bin/env bash
# `make bench-image`: the CPU image of the release runtime, built by `provision image build`
# vs the shell pipeline a user would otherwise script for the same two layers without a daemon
# (GNU tar with fixed mtimes and owners, gzip at its default level as Docker compresses layers,
# sha256sum of the tar and of the gzip). Wall time of each, median of REPEATS runs, and the
# ratio; results in bench/image.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
runtime=${RUNTIME_BIN:-$target/release/runtime}
provision=${PROVISION_BIN:-$target/release/provision}
[ -x "$provision" ] || provision=$target/debug/provision
repeats=${REPEATS:-5}
load=$(cut -d' ' -f1-3 /proc/loadavg)
[ -x "$runtime" ] || { echo "build first: cargo build --workspace --release" >&2; exit 1; }
work=$(mktemp -d -t bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# The same files in a staging root, for the shell pipeline.
stage=$work/stage
mkdir -p "$stage/usr/local/bin" "$stage/etc/ssl/certs" "$stage/tmp" "$stage/home/runtime"
cp /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nruntime:x:1000:1000:runtime:/home/runtime:/sbin/nologin\n' > "$stage/etc/passwd"
for lib in $(ldd "$runtime" | grep -o '/[^ ]*'); do
  mkdir -p "$stage$(dirname "$lib")"; cp -L "$lib" "$stage$lib"
done
mkdir -p "$work/app/usr/local/bin"; cp "$runtime" "$work/app/usr/local/bin/runtime"

layer() { # dir out
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - . \
    | tee >(sha256sum > "$2.diffid") | gzip > "$2"
  sha256sum "$2" > "$2.digest"
}

ours=(); shell=()
for i in $(seq "$repeats"); do
  t0=$(now)
  "$provision" image build --stack stacks/orderflow.toml --binary "$runtime" --out "$work/oci" --tag bench > /dev/null 2>&1
  t1=$(now)
  layer "$stage" "$work/system.tar.gz" & layer "$work/app" "$work/app.tar.gz"; wait
  t2=$(now)
  ours+=("$(echo "$t1 - $t0" | bc -l)"); shell+=("$(echo "$t2 - $t1" | bc -l)")
done
ours_s=$(printf '%s\n' "${ours[@]}" | median)
shell_s=$(printf '%s\n' "${shell[@]}" | median)
ratio=$(echo "$shell_s / $ours_s" | bc -l)
binary_mb=$(echo "$(stat -c %s "$runtime") / 1000000" | bc -l)
ours_mb=$(du -sb "$work/oci/blobs" | awk '{ printf "%.1f", $1 / 1e6 }')
shell_mb=$(cat "$work/system.tar.gz" "$work/app.tar.gz" | wc -c | awk '{ printf "%.1f", $1 / 1e6 }')

cat > bench/image.md <<MD
# Image build (CPU flavour)

\`make bench-image\`: the CPU image of \`$(basename "$(dirname "$runtime")")/runtime\` ($(printf '%.1f' "$binary_mb") MB binary), built by
\`provision image build\` (two layers, config, manifest, OCI layout; gzip level 1, both layers
at once) vs the shell pipeline that makes the same two layers (GNU tar with fixed mtimes and
owners, gzip at its default level, as Docker compresses layers, both layers at once, sha256sum
of each tar and gzip). Median of $repeats runs on $(nproc) CPUs, $(date -u +%Y-%m-%d); load average
before the runs: $load (other work on the machine slows both builders alike).

| builder | wall time | compressed size |
|---|---|---|
| provision image build ($(basename "$(dirname "$provision")")) | $(printf '%.2f' "$ours_s") s | $ours_mb MB |
| tar + gzip + sha256sum | $(printf '%.2f' "$shell_s") s | $shell_mb MB |

provision is **$(printf '%.1f' "$ratio")x** the shell pipeline's speed
($(echo "$binary_mb / $ours_s" | bc -l | xargs printf '%.0f') MB of binary per second). The target is under 2 s for the CPU image of the
release runtime.
MD
if [ "$(basename "$(dirname "$provision")")" = debug ]; then
  printf '\nprovision was a debug build here (its gzip and sha256 at opt-level 0): not the figure\nto quote; `make bench-image` builds and measures the release binaries.\n' >> bench/image.md
fi
cat bench/image.md
