#!/usr/bin/env bash
# Layer unpack and pack: ours against umoci, GNU tar, gzip, pigz and zstd,
# in one run, on a generated image of several layers.
#
#   bench/overlay/unpack.sh [FILES_PER_LAYER] [LARGE_MB] [RSS_MB]
#
# Defaults: 3 layers of 12000 files each (about 170 MB per layer), one
# 256 MiB file in a fourth layer, and a 1024 MiB layer for peak RSS.
# WORK=DIR puts the data elsewhere (default: a temp dir under /tmp).
#
# Unpack: the whole image flattened by us (`layer flatten`: every layer,
# both digests verified), and unpacked into overlay snapshots (layers in
# parallel, both digests verified, with and without the syncfs that makes
# commits durable), against `umoci unpack` (which verifies, and does not
# sync) and against `tar -xzf` of each layer in turn (no verification), cold
# (page cache dropped before each run, needs root) and warm (the same runs
# again). Each run writes into a fresh directory (see `fresh` below).
# Pack: one directory into a gzip / zstd layer, ours (digest and diff ID
# computed in the same pass) against `tar -c | gzip | tee | sha256sum`,
# the same with pigz, and with `zstd -T2`. Prints seconds, peak RSS and
# ratios (theirs / ours: above 1 means we are faster). Wants a quiet
# machine: it prints the load average before and after.
set -euo pipefail
FILES=${1:-12000}
LARGE_MB=${2:-256}
RSS_MB=${3:-1024}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/overlay-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p image-overlay --example layer --example snapshots --manifest-path "$ROOT/Cargo.toml"
L="$ROOT/target/release/examples/layer"
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK ($(findmnt -no FSTYPE -T "$WORK"))"

gen() { # gen DIR FILES LARGE_MB SEED
  python3 - "$@" <<'PY'
import os, sys, random
root, n, large, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randint(2, 10))) for _ in range(4000)]
os.makedirs(root, exist_ok=True)
for i in range(n):
    d = os.path.join(root, f"l{seed}", f"d{i % 300:03d}", f"s{i % 5}")
    os.makedirs(d, exist_ok=True)
    size = rnd.choice([0, 100, 1000, 4000, 16000, 64000])
    if i % 2:  # text-like, compressible
        data = b" ".join(rnd.choice(words) for _ in range(size // 6))[:size]
    else:      # binary-like: half random, half zeros
        data = os.urandom(size // 2) + bytes(size - size // 2)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(data)
if large:
    chunk = os.urandom(1 << 20)
    with open(os.path.join(root, f"large{seed}.bin"), "wb") as f:
        for i in range(large):
            f.write(chunk if i % 2 else bytes(1 << 20))
PY
}

echo "== generating 3 layers x $FILES files + a ${LARGE_MB} MiB layer"
for i in 1 2 3; do gen "$WORK/src$i" "$FILES" 0 "$i"; done
gen "$WORK/src4" 0 "$LARGE_MB" 4
du -sh "$WORK"/src? | tr '\n' ' '; echo
"$L" image "$WORK/layout" bench:1 gzip "$WORK"/src? | grep -v '^layer' || true
REF=docker.io/library/bench:1
LAYERS=$(python3 - "$WORK/layout" "$REF" <<'PY'
import json, sys
root, ref = sys.argv[1], sys.argv[2]
idx = json.load(open(f"{root}/index.json"))
m = [d for d in idx["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref][0]
alg, hx = m["digest"].split(":")
man = json.load(open(f"{root}/blobs/{alg}/{hx}"))
print(" ".join(f"{root}/blobs/{l['digest'].replace(':', '/')}" for l in man["layers"]))
PY
)
du -ch $LAYERS | tail -1 | sed 's/total/compressed image/'

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop caches: not root)" >&2; }

# t NAME CMD... : runs CMD, prints seconds and peak RSS, sets T and RSS.
t() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" >/dev/null 2>"$WORK/err.out" || {
    echo "($name failed)"; cat "$WORK/err.out"; }
  read -r T RSS < <(tail -1 "$WORK/time.out")
  printf "%-40s %8.2fs %8d KiB peak RSS\n" "$name" "$T" "$RSS"
}
ratio() { echo "scale=2; $1 / $2" | bc -l; }
# Every run writes into a directory of its own and nothing is deleted until
# the script ends. A deletion inside the timed window would bill one tool for
# another's writeback, and on an ext4 without a journal (as this VM's root is)
# the inode allocator skips inodes freed in the last minutes while their inode
# table blocks are cached (ext4 ialloc.c, recently_deleted()): every warm run
# after an `rm -rf` of the previous tree paid for that scan, which made warm
# runs ~5x slower than cold ones for every tool.
N=0
fresh() { N=$((N + 1)); OUT="$WORK/out/$N"; mkdir -p "$OUT"; sync; }

echo "== unpack the image ($(echo $LAYERS | wc -w) gzip layers)"
S="$ROOT/target/release/examples/snapshots"
for mode in cold warm; do
  fresh; [ $mode = cold ] && drop
  t "ours flatten ($mode)" "$L" flatten "$WORK/layout" "$REF" "$OUT/rootfs"; OURS=$T
  fresh; [ $mode = cold ] && drop
  t "ours overlay snapshots, parallel ($mode)" "$S" overlay "$WORK/layout" "$OUT/snap" 0 "$REF"; OV=$T
  fresh; [ $mode = cold ] && drop
  SNAPSHOTS_SYNC=0 t "ours overlay snapshots, no syncfs ($mode)" "$S" overlay "$WORK/layout" "$OUT/snap" 0 "$REF"; OVN=$T
  fresh; [ $mode = cold ] && drop
  t "umoci unpack ($mode)" umoci unpack --image "$WORK/layout:$REF" "$OUT/bundle"; UMOCI=$T
  fresh; [ $mode = cold ] && drop
  # shellcheck disable=SC2086
  t "tar -xzf each layer ($mode)" sh -c 'd=$1; shift; for l in "$@"; do tar -xzf "$l" -C "$d" || exit 1; done' sh "$OUT" $LAYERS; TAR=$T
  echo "ratio unpack $mode, flattened: umoci / ours = $(ratio "$UMOCI" "$OURS")   tar -xzf / ours = $(ratio "$TAR" "$OURS")"
  echo "ratio unpack $mode, overlay snapshots: umoci / ours = $(ratio "$UMOCI" "$OV")   tar -xzf / ours = $(ratio "$TAR" "$OV")   flattened / snapshots = $(ratio "$OURS" "$OV")"
  echo "ratio unpack $mode, overlay snapshots without syncfs (umoci and tar do not sync either): umoci / ours = $(ratio "$UMOCI" "$OVN")   tar -xzf / ours = $(ratio "$TAR" "$OVN")"
done

echo "== pack one directory (layer 1 + the large file)"
mkdir -p "$WORK/packsrc" && mv "$WORK/src1"/* "$WORK/packsrc/" && mv "$WORK/src4"/* "$WORK/packsrc/"
du -sh "$WORK/packsrc"
for mode in cold warm; do
  [ $mode = cold ] && drop
  t "ours pack gzip ($mode)" "$L" pack "$WORK/packsrc" "$WORK/ours.tar.gz" gzip; OGZ=$T
  [ $mode = cold ] && drop
  t "tar -c | gzip | sha256sum ($mode)" sh -c "tar -C '$WORK/packsrc' -cf - . | gzip | tee '$WORK/gnu.tar.gz' | sha256sum"; GZ=$T
  [ $mode = cold ] && drop
  t "tar -c | pigz | sha256sum ($mode)" sh -c "tar -C '$WORK/packsrc' -cf - . | pigz | tee '$WORK/pigz.tar.gz' | sha256sum"; PIGZ=$T
  [ $mode = cold ] && drop
  t "ours pack zstd ($mode)" "$L" pack "$WORK/packsrc" "$WORK/ours.tar.zst" zstd; OZST=$T
  [ $mode = cold ] && drop
  t "tar -c | zstd -T2 | sha256sum ($mode)" sh -c "tar -C '$WORK/packsrc' -cf - . | zstd -q -T2 | tee '$WORK/gnu.tar.zst' | sha256sum"; ZST=$T
  echo "ratio pack $mode: tar|gzip / ours gzip = $(ratio "$GZ" "$OGZ")   tar|pigz / ours gzip = $(ratio "$PIGZ" "$OGZ")   tar|zstd -T2 / ours zstd = $(ratio "$ZST" "$OZST")"
done
ls -l "$WORK"/*.tar.* | awk '{printf "%12d %s\n", $5, $9}'

echo "== peak RSS of one layer of ${RSS_MB} MiB (a single file) against one of ${LARGE_MB} MiB"
rm -rf "$WORK"/src? "$WORK/packsrc" "$WORK/out" "$WORK"/*.tar.* "$WORK/layout"
gen "$WORK/big" 0 "$RSS_MB" 5
t "ours pack gzip ${RSS_MB} MiB" "$L" pack "$WORK/big" "$WORK/big.tar.gz" gzip
t "ours pack zstd ${RSS_MB} MiB" "$L" pack "$WORK/big" "$WORK/big.tar.zst" zstd
rm -rf "$WORK/big"; mkdir "$WORK/big"
t "ours unpack gzip ${RSS_MB} MiB" "$L" unpack "$WORK/big.tar.gz" "$WORK/big"
rm -rf "$WORK/big"; mkdir "$WORK/big"
t "ours unpack zstd ${RSS_MB} MiB" "$L" unpack "$WORK/big.tar.zst" "$WORK/big"
rm -rf "$WORK/big" "$WORK"/big.tar.*
gen "$WORK/small" 0 "$LARGE_MB" 6
t "ours pack gzip ${LARGE_MB} MiB" "$L" pack "$WORK/small" "$WORK/small.tar.gz" gzip
rm -rf "$WORK/small"; mkdir "$WORK/small"
t "ours unpack gzip ${LARGE_MB} MiB" "$L" unpack "$WORK/small.tar.gz" "$WORK/small"
echo "== done, $(uptime | sed 's/.*load/load/')"
