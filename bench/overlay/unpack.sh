#!/usr/bin/env bash
# Unpack and pack of one generated layer: ours against GNU tar (+gzip/pigz/zstd).
# Cold runs drop the page cache first (needs root), warm runs repeat at once.
#
#   bench/overlay/unpack.sh [FILES] [LARGE_MB]
# Defaults: 20000 files, one 256 MiB file. Prints seconds, peak RSS and ratios.
set -euo pipefail
FILES=${1:-20000}
LARGE_MB=${2:-256}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/overlay-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p image-overlay --example layer --manifest-path "$ROOT/Cargo.toml"
LAYER_BIN="$ROOT/target/release/examples/layer"

echo "== generating $FILES files + one ${LARGE_MB} MiB file in $WORK/src"
mkdir -p "$WORK/src"
python3 - "$WORK/src" "$FILES" "$LARGE_MB" <<'PY'
import os, sys, random
root, n, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i % 200:03d}", f"s{i % 7}")
    os.makedirs(d, exist_ok=True)
    size = rnd.choice([0, 100, 1000, 4000, 16000, 64000])
    # Half-compressible content, like real binaries and text.
    data = (os.urandom(size // 2) + bytes(size - size // 2))
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(data)
chunk = os.urandom(1 << 20)
with open(os.path.join(root, "large.bin"), "wb") as f:
    for i in range(large):
        f.write(chunk if i % 2 else bytes(1 << 20))
PY
du -sh "$WORK/src"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop caches: not root)" >&2; }

# time_cmd NAME CMD... -> prints "NAME seconds rss_kb", stores seconds in $T
time_cmd() {
  local name=$1; shift
  local out
  /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" >/dev/null 2>&1 || echo "($name failed)" >&2
  out=$(tail -1 "$WORK/time.out")
  T=$(echo "$out" | awk '{print $1}'); local rss
  rss=$(echo "$out" | awk '{print $2}')
  printf "%-34s %8.2fs  %8d KiB RSS\n" "$name" "$T" "$rss"
}

if [ ! -x /usr/bin/time ]; then
  time_cmd() {
    local name=$1; shift
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    T=$(echo "$e - $s" | bc -l)
    printf "%-34s %8.2fs\n" "$name" "$T"
  }
fi

ratio() { echo "scale=2; $1 / $2" | bc -l; }

echo "== pack"
drop; time_cmd "ours pack gzip"          "$LAYER_BIN" pack "$WORK/src" "$WORK/ours.tar.gz" gzip; OURS_GZ=$T
drop; time_cmd "tar -c | gzip"           sh -c "tar -C '$WORK/src' -cf - . | gzip > '$WORK/tar.tar.gz' && sha256sum '$WORK/tar.tar.gz'"; TAR_GZ=$T
drop; time_cmd "tar -c | pigz"           sh -c "tar -C '$WORK/src' -cf - . | pigz > '$WORK/pigz.tar.gz' && sha256sum '$WORK/pigz.tar.gz'"; PIGZ=$T
drop; time_cmd "ours pack zstd"          "$LAYER_BIN" pack "$WORK/src" "$WORK/ours.tar.zst" zstd; OURS_ZST=$T
drop; time_cmd "tar -c | zstd -T2"       sh -c "tar -C '$WORK/src' -cf - . | zstd -q -T2 > '$WORK/tar.tar.zst' && sha256sum '$WORK/tar.tar.zst'"; TAR_ZST=$T
echo "ratio pack gzip: tar|gzip / ours = $(ratio "$TAR_GZ" "$OURS_GZ"), tar|pigz / ours = $(ratio "$PIGZ" "$OURS_GZ")"
echo "ratio pack zstd: tar|zstd -T2 / ours = $(ratio "$TAR_ZST" "$OURS_ZST")"
ls -l "$WORK"/*.tar.* | awk '{print $5, $9}'

echo "== unpack (same gzip layer, made by GNU tar)"
for mode in cold warm; do
  rm -rf "$WORK/u1" "$WORK/u2"; mkdir "$WORK/u1" "$WORK/u2"
  [ $mode = cold ] && drop
  time_cmd "ours unpack ($mode)"         "$LAYER_BIN" unpack "$WORK/tar.tar.gz" "$WORK/u1"; OURS=$T
  [ $mode = cold ] && drop
  time_cmd "tar -xzf ($mode)"            tar -xzf "$WORK/tar.tar.gz" -C "$WORK/u2"; TAR=$T
  echo "ratio unpack gzip $mode: tar -xzf / ours = $(ratio "$TAR" "$OURS")"
done
for mode in cold warm; do
  rm -rf "$WORK/u1" "$WORK/u2"; mkdir "$WORK/u1" "$WORK/u2"
  [ $mode = cold ] && drop
  time_cmd "ours unpack zstd ($mode)"    "$LAYER_BIN" unpack "$WORK/tar.tar.zst" "$WORK/u1"; OURS=$T
  [ $mode = cold ] && drop
  time_cmd "tar -I zstd -xf ($mode)"     tar -I zstd -xf "$WORK/tar.tar.zst" -C "$WORK/u2"; TAR=$T
  echo "ratio unpack zstd $mode: tar -I zstd -xf / ours = $(ratio "$TAR" "$OURS")"
done
