#!/usr/bin/env bash
# Layer unpack on a disk, measured fairly: ours against umoci, GNU tar,
# gzip alone and a plain writer, in one run, on a generated image of
# several layers; then the ingest of a 1 GiB blob against dd; then pack.
#
#   bench/overlay/unpack.sh [FILES_PER_LAYER] [LARGE_MB] [RSS_MB]
#
# Defaults: 3 layers of 12000 files each (about 170 MB per layer), one
# 256 MiB file in a fourth layer, and a 1024 MiB layer for peak RSS.
# RUNS=N repetitions (default 5; medians, min and max are printed);
# INGEST_MB=1024 the blob of the ingest comparison; PACK=0 skips pack and
# peak RSS; WORK=DIR puts the data elsewhere (default: a temp dir under
# /var/tmp). To cut a run to some rows: FS="ext4" (default "ext4 tmpfs"),
# MODES="cold" (default "cold warm"), TOOLS="flatten decode overlay
# plainwrite" (default every tool), INGEST=0 skips the ingest comparison.
# BIN_DIR=DIR takes the example binaries (layer, snapshots, plainwrite,
# load) from DIR as they are, unbuilt: the binaries of another commit, for
# a before/after comparison. BASE_BIN_DIR=DIR adds that comparison to the
# same run: a row "flatten-base" (DIR's `layer flatten`) beside each
# flatten (after it in odd runs, before it in even ones), and its ratio
# to ours.
# Needs root (loop device, mount, drop_caches).
#
# Unpack: the whole image flattened by us (`layer flatten`: every layer,
# its diff ID verified; the blob digest, which the store checked at
# ingest, is not hashed again), and unpacked into overlay snapshots
# (layers in parallel, verified as flatten does, with and without the
# syncfs that makes commits durable), against `umoci unpack` (verifies,
# does not sync), `tar -xzf` of each layer in turn (no verification),
# `gzip -dc` of each layer to /dev/null (decompression alone, no
# filesystem), `decode` (our reading path alone: every layer
# decompressed, parsed and both digests checked, nothing written: the
# CPU part of flatten's time, plus the blob digest's SHA-256 that
# flatten no longer pays, `layer decode`), and `plainwrite`
# (image-overlay/examples/plainwrite.rs: the same directories,
# files and bytes created, written and closed, nothing else: the limit of
# the filesystem).
#
# Fair: every run gets a filesystem of its own, made just before it: the
# ext4 is a fixed loop device (direct I/O onto a pre-written file) made
# anew with mkfs before each run, so no run pays for the reclaim of an
# earlier run's tree (deleting a tree and unpacking again into the same
# filesystem moved every tool's median by up to 3x); tmpfs is mounted anew
# too. Cold runs drop the page cache first (the blobs are read from disk);
# warm runs read the blobs into the page cache first. Each repetition runs
# every tool once, in turn, so drift on a shared machine hits them alike,
# and each repetition starts one tool further on, so each tool takes each
# place in a repetition in turn (a place is not neutral: below).
# Two times per run: until the tool exits ("exit"), and until a syncfs of
# the new filesystem after it returns ("durable": the written data is on
# the disk, whoever left it dirty).
#
# Ingest: a 1 GiB blob (read, hash, write, fsync, rename, fsync of the
# directory: the store's one pass) against `dd bs=1M conv=fsync` of the
# same bytes, both from the same source file, from a cold cache into a
# fresh ext4, in turn (the order swapped every repetition). The store is
# created before the clock starts, as dd's directory exists before its:
# its creation (index.json and oci-layout, each written and synced, and
# the directory syncs) is not part of an ingest. Left in ours: one fsync
# of the data, as dd's, and one of the blob's directory after the rename
# (the crash rule: a blob is durable before anything references it).
# Beside them, the parts the ingest overlaps: `read` (the source read
# alone, cold, to /dev/null), `hash` (the same bytes hashed by our
# hasher, warm: the CPU floor of the hashing), and `dd-nocache` (dd with
# `oflag=nocache`, which starts the writeback of each block as it is
# written, as the ingest does per 32 MiB).
# ONLY=ingest runs the ingest comparison alone (no unpack rows, no pack).
#
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
RUNS=${RUNS:-5}
INGEST_MB=${INGEST_MB:-1024}
PACK=${PACK:-1}
ONLY=${ONLY:-}
case $ONLY in ''|ingest) ;; *) echo "ONLY=$ONLY: only ONLY=ingest is known" >&2; exit 2 ;; esac
FS=${FS:-ext4 tmpfs}
MODES=${MODES:-cold warm}
TOOLS=${TOOLS:-flatten decode overlay overlay-nosync umoci tar-xzf gzip-dc plainwrite}
INGEST=${INGEST:-1}
if [ "$ONLY" = ingest ]; then PACK=0; TOOLS=; INGEST=1; fi
WORK=${WORK:-$(mktemp -d /var/tmp/overlay-bench.XXXXXX)}
mkdir -p "$WORK"
MNT="$WORK/mnt"
LOOP=
# ours: whether $LOOP still backs our file. Engineers share this machine
# and its loop devices: a device detached under us may have been given to
# someone else's file, which mkfs would wipe and a detach would take away.
ours() { [ -n "$LOOP" ] && [ "$(cat "/sys/block/${LOOP#/dev/}/loop/backing_file" 2>/dev/null)" = "$(realpath "$WORK/fs.img")" ]; }
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
  ours && losetup -d "$LOOP"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${BIN_DIR:-}" ]; then
  [ -z "$TOOLS" ] || cargo build --release -q -p image-overlay --example layer --example snapshots --example plainwrite --manifest-path "$ROOT/Cargo.toml"
  cargo build --release -q -p image-store --example load --manifest-path "$ROOT/Cargo.toml"
fi
BIN_DIR=${BIN_DIR:-$ROOT/target/release/examples}
L="$BIN_DIR/layer"
P="$BIN_DIR/plainwrite"
I="$BIN_DIR/load"
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK ($(findmnt -no FSTYPE -T "$WORK"))"

gen() { # gen DIR FILES LARGE_MB SEED (bench/gen_tree.py)
  python3 "$ROOT/bench/gen_tree.py" "$@"
}

LAYERS=
if [ "$ONLY" != ingest ]; then
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
fi

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

# The plain writer's list: every directory and file of the image, in the
# order of the layers (their paths do not overlap).
[ "$ONLY" = ingest ] || python3 - "$WORK/plain.list" "$WORK"/src? <<'PY'
import os, sys
out, roots = sys.argv[1], sys.argv[2:]
with open(out, "w") as f:
    made = set()
    for root in roots:
        for d, dirs, files in os.walk(root):
            dirs.sort(); files.sort()
            rel = os.path.relpath(d, root)
            if rel != "." and rel not in made:
                made.add(rel); f.write(f"d\t{rel}\n")
            for n in files:
                p = os.path.join(d, n)
                f.write(f"f\t{os.path.getsize(p)}\t{os.path.normpath(os.path.join(rel, n))}\n")
PY

# The filesystem every run gets: a loop device onto a file written once
# (so the host allocates nothing during a run), direct I/O (so the loop
# does not go through the host's page cache a second time), made anew
# with mkfs before each run; or a tmpfs mounted anew.
SRC_MB=0
[ -z "$TOOLS" ] || SRC_MB=$(du -sm "$WORK"/src? | awk '{s += $1} END {print s}')
FS_MB=$(( SRC_MB * 3 + (INGEST == 1 ? INGEST_MB * 2 : 0) + 512 ))
echo "== a ${FS_MB} MiB loop device for the fresh ext4 of each run"
dd if=/dev/zero of="$WORK/fs.img" bs=16M count=$(( (FS_MB + 15) / 16 )) conv=fsync status=none
LOOP=$(losetup --direct-io=on -f --show "$WORK/fs.img")
mkdir -p "$MNT"
newfs() { # newfs ext4|tmpfs
  mountpoint -q "$MNT" && umount "$MNT"
  case $1 in
    # mkfs refuses a device something still holds ("apparently in use by
    # the system": seen for seconds after a umount on a machine shared with
    # tests that make mount namespaces, which keep a copy of the mount
    # until they end): wait and retry, for up to half a minute; and stop if
    # the device no longer backs our file.
    ext4) for try in $(seq 30); do
            ours || { echo "$LOOP no longer backs $WORK/fs.img: stopping" >&2; exit 1; }
            mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$LOOP" && break
            [ "$try" = 30 ] && return 1
            sleep 1
          done
          mount "$LOOP" "$MNT" ;;
    tmpfs) mount -t tmpfs -o "size=${FS_MB}m" tmpfs "$MNT" ;;
  esac
}
# shellcheck disable=SC2086
warm_blobs() { cat ${WARM_FILES:-$LAYERS} > /dev/null; }
RESULTS="$WORK/results"
: > "$RESULTS"
# run FS MODE NAME CMD... : a fresh FS, the cache as MODE asks, then CMD
# timed to its exit and to a syncfs of the filesystem after it. SETUP=FN
# runs FN on the fresh FS before the cache is dropped and the clock
# starts (the ingest's store is made so).
run() {
  local fs=$1 mode=$2 name=$3; shift 3
  newfs "$fs"
  if [ -n "${SETUP:-}" ]; then "$SETUP" >/dev/null 2>"$WORK/err.out" || { echo "($name setup failed)"; cat "$WORK/err.out"; }; fi
  if [ "$mode" = cold ]; then drop; else sync; warm_blobs; fi
  local t0 t1 t2 r0 note=
  r0=$(reported)
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$WORK/err.out" || { echo "($name failed)"; cat "$WORK/err.out"; }
  t1=$(date +%s.%N)
  sync -f "$MNT"
  t2=$(date +%s.%N)
  [ -z "$r0" ] || [ "$(reported)" = "$r0" ] || note="  (free page reporting: $(( ($(reported) - r0) / 1024 )) MiB given back to the host)"
  echo "$fs $mode $name $(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t0" | bc -l)" >> "$RESULTS"
  printf "  %-5s %-4s %-22s exit %7.2fs  durable %7.2fs%s\n" "$fs" "$mode" "$name" \
    "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t0" | bc -l)" "$note"
}
# reported: KiB of free memory this VM's balloon has reported to the host
# so far, or nothing: the counter is the bench VM kernel's own
# (/sys/module/page_reporting/parameters/reported_kib, not in mainline
# Linux, which has only page_reporting_order there); elsewhere no run is
# marked.
# A run during which the host took pages back pays for faulting them in
# again as it touches them: on the bench machine of session 11, a cold
# buffered read of the blobs took up to 4 times as long. Such runs are
# marked, so a slow run can be told from a slow tool.
reported() { cat /sys/module/page_reporting/parameters/reported_kib 2>/dev/null || true; }
untar_each() { d=$1; shift; mkdir -p "$d"; for l in "$@"; do tar -xzf "$l" -C "$d" || return 1; done; }
gunzip_each() { for l in "$@"; do gzip -dc "$l" > /dev/null || return 1; done; }

S="$BIN_DIR/snapshots"
if [ -n "$TOOLS" ]; then
echo "== unpack the image ($(echo $LAYERS | wc -w) gzip layers), $RUNS runs of every tool per filesystem and cache state"
# tool NAME: whether TOOLS asks for the row NAME.
tool() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for fs in $FS; do
  for mode in $MODES; do
    # The steps of one repetition (the tools asked for), in an order that
    # turns by one step every repetition, so every tool takes each place in
    # turn: the place is not neutral (in two runs of session 10, a flatten,
    # ours or the base's, that ran first after the previous repetition's
    # writers was most often 0.2-0.4 s slower than in second place).
    # With a base, the two flattens are one step, the first swapped every run.
    base() { [ -z "${BASE_BIN_DIR:-}" ] || ! tool flatten || run $fs $mode flatten-base "$BASE_BIN_DIR/layer" flatten "$WORK/layout" "$REF" "$MNT/rootfs"; }
    step_flatten() {
      [ $((r % 2)) = 1 ] || base
      tool flatten && run $fs $mode flatten "$L" flatten "$WORK/layout" "$REF" "$MNT/rootfs"
      [ $((r % 2)) = 0 ] || base
      return 0
    }
    step_decode() { tool decode && run $fs $mode decode "$L" decode "$WORK/layout" "$REF"; return 0; }
    step_overlay() { tool overlay && run $fs $mode overlay "$S" overlay "$WORK/layout" "$MNT/snap" 0 "$REF"; return 0; }
    step_overlay_nosync() { tool overlay-nosync && SNAPSHOTS_SYNC=0 run $fs $mode overlay-nosync "$S" overlay "$WORK/layout" "$MNT/snap" 0 "$REF"; return 0; }
    step_umoci() { tool umoci && run $fs $mode umoci umoci unpack --image "$WORK/layout:$REF" "$MNT/bundle"; return 0; }
    # shellcheck disable=SC2086
    step_tar() { tool tar-xzf && run $fs $mode tar-xzf untar_each "$MNT/tar" $LAYERS; return 0; }
    # shellcheck disable=SC2086
    step_gzip() { tool gzip-dc && run $fs $mode gzip-dc gunzip_each $LAYERS; return 0; }
    step_plain() { tool plainwrite && run $fs $mode plainwrite "$P" "$WORK/plain.list" "$MNT/plain"; return 0; }
    STEPS=()
    for st in flatten:step_flatten decode:step_decode overlay:step_overlay overlay-nosync:step_overlay_nosync \
      umoci:step_umoci tar-xzf:step_tar gzip-dc:step_gzip plainwrite:step_plain; do
      ! tool "${st%%:*}" || STEPS+=("${st#*:}")
    done
    for r in $(seq "$RUNS"); do
      for k in $(seq 0 $(( ${#STEPS[@]} - 1 ))); do
        "${STEPS[$(( (k + r - 1) % ${#STEPS[@]} ))]}"
      done
    done
  done
done
fi

if [ "$INGEST" = 1 ]; then
  echo "== ingest of a ${INGEST_MB} MiB blob into a fresh ext4, cold, against dd conv=fsync"
  head -c $((INGEST_MB * 1024 * 1024)) /dev/urandom > "$WORK/blob"
  init_store() { "$I" init "$MNT/store"; }
  ingest() { SETUP=init_store run ext4 cold ingest "$I" ingest "$WORK/blob" "$MNT/store"; }
  dd_fsync() { run ext4 cold dd-fsync dd if="$WORK/blob" of="$MNT/dd" bs=1M conv=fsync status=none; }
  for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then ingest; dd_fsync; else dd_fsync; ingest; fi
    run ext4 cold dd-nocache dd if="$WORK/blob" of="$MNT/dd" bs=1M conv=fsync oflag=nocache status=none
    run ext4 cold read cat "$WORK/blob"
    WARM_FILES="$WORK/blob" run ext4 warm hash "$I" hash "$WORK/blob"
  done
  rm -f "$WORK/blob"
fi
mountpoint -q "$MNT" && umount "$MNT"

echo "== medians (min..max) of $RUNS runs, seconds; ratios of medians: theirs / ours (above 1: we are faster), ours / the limit (plainwrite, dd: at most the goal)"
python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
runs = {}
for fs, mode, name, ex, du in rows:
    runs.setdefault((fs, mode, name), []).append((float(ex), float(du)))
def med(k, i):
    v = runs.get(k)
    return statistics.median(x[i] for x in v) if v else None
for (fs, mode, name), v in runs.items():
    e = sorted(x[0] for x in v); d = sorted(x[1] for x in v)
    print(f"{fs:5} {mode:4} {name:15} exit {statistics.median(e):7.2f} ({e[0]:.2f}..{e[-1]:.2f})"
          f"   durable {statistics.median(d):7.2f} ({d[0]:.2f}..{d[-1]:.2f})")
def ratio(fs, mode, a, b, i, goal=None, what=""):
    x, y = med((fs, mode, a), i), med((fs, mode, b), i)
    if x is None or y is None:
        return
    r = x / y
    g = "" if goal is None else (f"   goal {goal}: " + ("met" if r >= goal else "NOT met"))
    print(f"  {a} / {b} = {r:.2f}{g}{what}")
for fs in ("ext4", "tmpfs") if any(k[2] == "flatten" for k in runs) else ():
    for mode in ("cold", "warm"):
        if not any(k[:2] == (fs, mode) for k in runs):
            continue
        for i, t in ((1, "durable"), (0, "exit")):
            print(f"ratios {fs} {mode} ({t}):")
            ratio(fs, mode, "flatten-base", "flatten", i)
            ratio(fs, mode, "umoci", "flatten", i, 3)
            ratio(fs, mode, "tar-xzf", "flatten", i, 2)
            ratio(fs, mode, "umoci", "overlay", i, 4)
            ratio(fs, mode, "tar-xzf", "overlay", i)
            ratio(fs, mode, "umoci", "overlay-nosync", i)
            ratio(fs, mode, "gzip-dc", "flatten", i)
            # The breakdown: flatten's reading alone (decode) against the
            # filesystem's limit; flatten is at best the larger of the two.
            ratio(fs, mode, "decode", "plainwrite", i)
            ratio(fs, mode, "flatten", "decode", i)
            # The limit: ours within 1.3x of the plain writer.
            for ours in ("flatten", "overlay"):
                x, y = med((fs, mode, ours), i), med((fs, mode, "plainwrite"), i)
                if x and y:
                    print(f"  {ours} / plainwrite = {x / y:.2f}   goal <= 1.3: " + ("met" if x / y <= 1.3 else "NOT met"))
x, y = med(("ext4", "cold", "ingest"), 1), med(("ext4", "cold", "dd-fsync"), 1)
if x and y:
    print(f"ingest / dd conv=fsync (cold, ext4, durable) = {x / y:.2f}   goal <= 1.15: " + ("met" if x / y <= 1.15 else "NOT met"))
    # The breakdown: what the ingest overlaps (reading, hashing, writing
    # back) against dd, which reads everything and then writes it all.
    for name, mode in (("dd-nocache", "cold"), ("read", "cold"), ("hash", "warm")):
        z = med(("ext4", mode, name), 1)
        if z:
            print(f"  {name} ({mode}) / dd conv=fsync = {z / y:.2f}   ingest / {name} = {x / z:.2f}")
PY

[ "$PACK" = 1 ] || { echo "== done, $(uptime | sed 's/.*load/load/')"; exit 0; }
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
