#!/usr/bin/env bash
# Hashing speed: `imagectl digest` against `openssl dgst -sha256` on the same
# file, in page cache, side by side in one run; prints the ratio.
# Usage: bench/hash.sh [SIZE_MIB] (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${RUNS:-5}
cargo build --release -q -p imagectl
bin=target/release/imagectl
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
file=$scratch/blob
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$file"
cat "$file" > /dev/null # into the page cache

best() { # best wall time in seconds over $runs runs of "$@"
  local best=999999 t0 t1 t
  for _ in $(seq "$runs"); do
    t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc -l)
    if (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  echo "$best"
}

ours_digest=$("$bin" digest "$file")
theirs_digest="sha256:$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)"
[ "$ours_digest" = "$theirs_digest" ] || { echo "digest mismatch: $ours_digest vs $theirs_digest" >&2; exit 1; }

ours=$(best "$bin" digest "$file")
theirs=$(best openssl dgst -sha256 "$file")
mibs() { echo "scale=0; $size_mib / $1" | bc -l; }
printf 'sha256 of %d MiB (page cache, best of %d)\n' "$size_mib" "$runs"
printf '  imagectl digest     %6.3f s  %5d MiB/s\n' "$ours" "$(mibs "$ours")"
printf '  openssl dgst        %6.3f s  %5d MiB/s\n' "$theirs" "$(mibs "$theirs")"
printf '  ratio (ours speed / openssl speed): %.3f (goal >= 0.95)\n' "$(echo "$theirs / $ours" | bc -l)"
