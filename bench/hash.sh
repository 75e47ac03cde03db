#!/usr/bin/env bash
# Hashing speed: `imagectl digest` against `openssl dgst -sha256` on the same
# file, in page cache, side by side in one run; prints the ratios of wall
# time (best of RUNS) and of CPU time (user+sys, best of RUNS; steadier
# on a shared machine).
# Usage: bench/hash.sh [SIZE_MIB] (default 1024); RUNS=5
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${RUNS:-5}
cargo build --release -q -p imagectl
bin=$PWD/target/release/imagectl
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
file=$scratch/blob
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$file"
cat "$file" > /dev/null # into the page cache

ours_digest=$("$bin" digest "$file")
theirs_digest="sha256:$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)"
[ "$ours_digest" = "$theirs_digest" ] || { echo "digest mismatch: $ours_digest vs $theirs_digest" >&2; exit 1; }

measure() { # prints "best_wall best_cpu" over $runs runs of "$@"
  local bw=999999 bc=999999 out w c
  for _ in $(seq "$runs"); do
    out=$( { /usr/bin/time -f '%e %U %S' "$@" > /dev/null; } 2>&1 | tail -1)
    w=$(echo "$out" | cut -d' ' -f1)
    c=$(echo "$out" | awk '{print $2 + $3}')
    if (( $(echo "$w < $bw" | bc -l) )); then bw=$w; fi
    if (( $(echo "$c < $bc" | bc -l) )); then bc=$c; fi
  done
  echo "$bw $bc"
}
read -r ow oc < <(measure "$bin" digest "$file")
read -r tw tc < <(measure openssl dgst -sha256 "$file")
mibs() { echo "scale=0; $size_mib / $1" | bc -l; }
printf 'sha256 of %d MiB in page cache, best of %d (%s)\n' "$size_mib" "$runs" "$(uptime | sed 's/.*load/load/')"
printf '  imagectl digest   wall %6.2f s (%5d MiB/s)  cpu %6.2f s\n' "$ow" "$(mibs "$ow")" "$oc"
printf '  openssl dgst      wall %6.2f s (%5d MiB/s)  cpu %6.2f s\n' "$tw" "$(mibs "$tw")" "$tc"
printf '  speed ratio ours/openssl: wall %.3f, cpu %.3f (goal >= 0.95)\n' \
  "$(echo "$tw / $ow" | bc -l)" "$(echo "$tc / $oc" | bc -l)"
