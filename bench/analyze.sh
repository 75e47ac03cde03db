#!/usr/bin/env bash
# Layer analysis against decompression alone, in one run: `imagectl
# analyze` (every layer read once: decompressed, both digests checked,
# every entry into the change list and dive's efficiency, the first 64 KiB
# of every file through the secret rules) against `gzip -dc` of every layer
# to /dev/null, on the bench image of bench/overlay/unpack.sh's generator
# (layers of generated text and binary files plus one large layer).
#
#   bench/analyze.sh [FILES_PER_LAYER] [LARGE_MB]
#
# Defaults: 4 layers of 6000 files and one 128 MiB layer. RUNS=N
# repetitions (default 5; medians, min and max printed); WORK=DIR puts the
# data elsewhere; IMAGECTL=PATH measures that binary (no build). Then peak RSS of the analysis of images of 1, 2, 4 and 8
# layers that rewrite the same files (memory should stay flat as layers
# grow: the paths of the filesystem and of one layer are kept, never
# data). Goal: analysis <= 1.3x gzip -dc.
set -euo pipefail
FILES=${1:-6000}
LARGE_MB=${2:-128}
RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /var/tmp/analyze-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
# IMAGECTL=PATH measures that binary instead of building the release one.
if [ -z "${IMAGECTL:-}" ]; then
  cargo build --release -q -p imagectl --manifest-path "$ROOT/Cargo.toml"
fi
I=${IMAGECTL:-"$ROOT/target/release/imagectl"}
export IMAGECTL_STORE="$WORK/store"
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK"

gen() { # gen DIR FILES LARGE_MB SEED (bench/gen_tree.py, as unpack.sh)
  python3 "$ROOT/bench/gen_tree.py" "$@"
}

make_image() { # make_image TAG LAYERS... (each a directory)
  local tag=$1 base=""
  shift
  local i=0
  for d in "$@"; do
    i=$((i + 1))
    if [ -z "$base" ]; then
      "$I" append --rootfs "$d" --tag "$tag-$i" >/dev/null
    else
      "$I" append --base "$base" --rootfs "$d" --tag "$tag-$i" >/dev/null
    fi
    base="$tag-$i"
  done
  "$I" tag "$base" "$tag" >/dev/null
}

echo "== generating 4 layers x $FILES files + a ${LARGE_MB} MiB layer"
for i in 1 2 3 4; do gen "$WORK/src$i" "$FILES" 0 "$i"; done
gen "$WORK/src5" 0 "$LARGE_MB" 5
make_image bench:1 "$WORK"/src1 "$WORK"/src2 "$WORK"/src3 "$WORK"/src4 "$WORK"/src5
LAYERS=$(python3 - "$IMAGECTL_STORE" <<'PY'
import json, sys
root = sys.argv[1]
idx = json.load(open(f"{root}/index.json"))
m = [d for d in idx["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name", "").endswith("bench:1")][0]
man = json.load(open(f"{root}/blobs/{m['digest'].replace(':', '/')}"))
print(" ".join(f"{root}/blobs/{l['digest'].replace(':', '/')}" for l in man["layers"]))
PY
)
du -ch $LAYERS | tail -1 | sed 's/total/compressed image/'

secs() { # secs CMD...: wall seconds of one run
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
stats() { # stats VALUES...: median min max
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median %.3f  min %.3f  max %.3f", m, a[1], a[NR]}'
}
gzip_all() { for l in $LAYERS; do gzip -dc "$l" >/dev/null; done; }

# Warm the page cache: both read the same blobs from memory.
cat $LAYERS >/dev/null
ours=() theirs=() ratios=()
for r in $(seq "$RUNS"); do
  a=$(secs "$I" analyze bench:1 --json)
  g=$(secs gzip_all)
  ours+=("$a"); theirs+=("$g"); ratios+=("$(echo "$a / $g" | bc -l)")
  printf 'run %d: analyze %.3f s, gzip -dc %.3f s, ratio %.3f\n' "$r" "$a" "$g" "${ratios[-1]}"
done
echo "analyze:  $(stats "${ours[@]}")"
echo "gzip -dc: $(stats "${theirs[@]}")"
echo "ratio:    $(stats "${ratios[@]}")  (goal <= 1.3)"

echo "== peak RSS as layers grow (each layer the same $FILES files rewritten)"
gen "$WORK/rss" "$FILES" 0 11
for n in 1 2 4 8; do
  dirs=()
  for k in $(seq "$n"); do dirs+=("$WORK/rss"); done
  make_image "rss:$n" "${dirs[@]}"
  kb=$( { /usr/bin/time -f '%M' "$I" analyze "rss:$n" --json >/dev/null; } 2>&1 | tail -1)
  echo "layers $n: max RSS ${kb} KiB"
done
echo "== load after: $(uptime | sed 's/.*load/load/')"
