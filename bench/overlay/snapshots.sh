#!/usr/bin/env bash
# Unpack of one generated 10-layer image into overlay snapshots (layers in
# parallel) against the flattened unpack and `umoci unpack`, cold (page cache
# dropped, needs root) and warm; then mount of its 10-layer root. The image
# of bench/overlay/unpack.sh goes through the same comparison there.
#
#   bench/overlay/snapshots.sh [LAYERS] [FILES] [LARGE_MB]
# Defaults: 10 layers, 20000 files in all, one 128 MiB file in the base layer.
set -euo pipefail
LAYERS=${1:-10}
FILES=${2:-20000}
LARGE_MB=${3:-128}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/snap-bench.XXXXXX)
cleanup() {
  grep -o "$WORK[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p image-overlay --example snapshots --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/examples/snapshots"

echo "== generating image: $LAYERS gzip layers, $FILES files, one ${LARGE_MB} MiB file"
"$BIN" gen "$WORK/layout" "$LAYERS" "$FILES" "$LARGE_MB" 2>/dev/null
du -sh "$WORK/layout"
# umoci wants a plain tag name: add "bench" beside the normalised one.
python3 - "$WORK/layout/index.json" <<'PY'
import json, sys
p = sys.argv[1]
idx = json.load(open(p))
m = dict(idx["manifests"][0]); m["annotations"] = {"org.opencontainers.image.ref.name": "bench"}
idx["manifests"].append(m)
json.dump(idx, open(p, "w"))
PY

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop caches: not root)" >&2; }
now() { date +%s.%N; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
T=0
run() { # NAME CMD...
  local name=$1; shift
  local s e
  s=$(now); "$@" >/dev/null 2>"$WORK/err" || { echo "($name failed)"; cat "$WORK/err"; }; e=$(now)
  T=$(echo "$e - $s" | bc -l)
  printf "%-40s %8.3fs\n" "$name" "$T"
}

# Outputs are kept until the end: see bench/overlay/unpack.sh for why a
# deletion must not precede a timed run.
for mode in cold warm; do
  echo "== unpack ($mode)"
  OUT="$WORK/$mode"; mkdir -p "$OUT"; sync
  [ $mode = cold ] && drop
  run "overlay snapshots, parallel ($mode)" "$BIN" overlay "$WORK/layout" "$OUT/ov" 0; OV=$T
  [ $mode = cold ] && drop
  SNAPSHOTS_SYNC=0 run "overlay, parallel, no syncfs ($mode)" "$BIN" overlay "$WORK/layout" "$OUT/ovn" 0; OVN=$T
  [ $mode = cold ] && drop
  run "overlay snapshots, 1 thread ($mode)" "$BIN" overlay "$WORK/layout" "$OUT/ov1" 1; OV1=$T
  [ $mode = cold ] && drop
  run "flattened unpack ($mode)"          "$BIN" flatten "$WORK/layout" "$OUT/flat"; FL=$T
  if command -v umoci >/dev/null; then
    [ $mode = cold ] && drop
    run "umoci unpack ($mode)"            umoci unpack --image "$WORK/layout:bench" "$OUT/umoci"; UM=$T
    echo "ratio $mode: umoci / overlay-parallel = $(ratio "$UM" "$OV"), flattened / overlay-parallel = $(ratio "$FL" "$OV"), 1-thread / parallel = $(ratio "$OV1" "$OV")"
    echo "ratio $mode (no syncfs): umoci / overlay-parallel = $(ratio "$UM" "$OVN"), flattened / overlay-parallel = $(ratio "$FL" "$OVN")"
  else
    echo "ratio $mode: flattened / overlay-parallel = $(ratio "$FL" "$OV"), 1-thread / parallel = $(ratio "$OV1" "$OV")"
  fi
done

echo "== mount of the $LAYERS-layer root (prepare on the top chain ID, mount, unmount)"
"$BIN" mount "$OUT/ov" 50 2>/dev/null
