#!/usr/bin/env bash
# Push and pull against a local registry, ours (`imagectl push`/`pull`)
# against `skopeo copy` (oci: layout <-> docker://) in the same run, pair
# by pair; peak memory of our pull and push for two layer sizes; and
# `pull --unpack` (one pass) against `pull` then `unpack --driver overlay`.
#
#   bench/registry.sh [FILES_PER_LAYER] [LARGE_MB] [RSS_MB]
#
# The image: the multi-layer bench image of bench/overlay/unpack.sh, made
# locally the same way (3 layers of FILES files each, default 12000, about
# 170 MB a layer, and a fourth layer of one LARGE_MB file, default 256,
# half random, half zeros; gzip), written by image-overlay's `layer image`
# example into an OCI layout, which is also our store (a store is a
# layout). The registry: Debian's docker-registry (CNCF distribution) on
# 127.0.0.1, storage in WORK, plain HTTP (`--insecure` for us,
# `--*-tls-verify=false` for skopeo).
#
# Fair: each repetition runs ours and skopeo in turn (their order
# alternating), each into a fresh store / layout, and each push into a
# registry with empty storage (so both upload every blob) on a second
# port; both pull everything. Times
# to exit (our store fsyncs each blob; skopeo's layout does not), so the
# durable difference is on skopeo's side. Ratios are theirs / ours: above 1
# means we are faster. Medians, min..max.
#
# Peak memory: our pull and push of a one-layer image of RSS_MB MiB and of
# 4 x RSS_MB MiB (default 64 and 256): flat means about the same.
#
# One pass against two: each repetition runs `pull --unpack` and `pull`
# then `unpack`, their order alternating, each into a fresh ext4 made just
# before it (bench/freshfs.sh: a filesystem still reclaiming an earlier
# run's tree swung the unpack up to 3x), after a sync and a drop of the
# page cache with the registry's blobs read back in (the registry serves
# from memory, as a warm registry does; what each pass writes, and the
# two passes' read-back of the blobs, starts cold). Times to exit, and CPU
# time (user + system) of each, and of the two passes' pull and unpack.
#
# RUNS=N repetitions (default 5); WORK=DIR puts the data elsewhere
# (default: a temp dir under /var/tmp, removed at the end); PORT the
# registry's port (default 5057; PORT+1 and PORT+2 are used too).
# ONLY=unpack runs the one pass against the two passes alone. RATE=R (e.g.
# RATE=100mbit) pulls them through a proxy whose download direction is
# one link of R bits per second (bench/rate_proxy.py), as users on a real
# network see it: the one pass then unpacks while the link is the
# bottleneck. Needs root (overlay snapshots, loop device, mount,
# drop_caches).
set -euo pipefail
FILES=${1:-12000}
LARGE_MB=${2:-256}
RSS_MB=${3:-64}
RUNS=${RUNS:-5}
PORT=${PORT:-5057}
ONLY=${ONLY:-}
RATE=${RATE:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /var/tmp/registry-bench.XXXXXX)}
mkdir -p "$WORK"
REG_PID=
PUSH_PID=
PROXY_PID=
# shellcheck source=bench/freshfs.sh
. "$ROOT/bench/freshfs.sh"
cleanup() {
  for p in $REG_PID $PUSH_PID $PROXY_PID; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  findmnt -rno TARGET | grep "^$WORK/" | sort -r | xargs -r umount -l 2>/dev/null || true
  freshfs_done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "registry.sh: FAILED: $*" >&2; exit 1; }
for t in skopeo docker-registry python3 bc /usr/bin/time mkfs.ext4 losetup; do
  command -v $t >/dev/null || fail "$t is not installed"
done

# IMAGECTL=PATH and LAYER=PATH use those binaries instead of building
# them (an earlier build's imagectl, paired against this one's).
[ -n "${IMAGECTL:-}" ] || cargo build --release -q -p imagectl --bin imagectl --manifest-path "$ROOT/Cargo.toml"
[ -n "${LAYER:-}" ] || cargo build --release -q -p image-overlay --example layer --manifest-path "$ROOT/Cargo.toml"
IMAGECTL=${IMAGECTL:-$ROOT/target/release/imagectl}
L=${LAYER:-$ROOT/target/release/examples/layer}
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK ($(findmnt -no FSTYPE -T "$WORK"))"

# The generator of bench/overlay/unpack.sh: the same image.
gen() { python3 "$ROOT/bench/gen_tree.py" "$@"; }

echo "== generating 3 layers x $FILES files + a ${LARGE_MB} MiB layer"
for i in 1 2 3; do gen "$WORK/src$i" "$FILES" 0 "$i"; done
gen "$WORK/src4" 0 "$LARGE_MB" 4
"$L" image "$WORK/layout" bench:1 gzip "$WORK"/src? | grep -v '^layer' || true
echo "compressed image bench:1: $(du -sh "$WORK/layout/blobs" | cut -f1)"
if [ "$ONLY" != unpack ]; then
  gen "$WORK/rss1" 0 "$RSS_MB" 5
  gen "$WORK/rss4" 0 $((RSS_MB * 4)) 6
  "$L" image "$WORK/layout" rss:1 gzip "$WORK/rss1" | grep -v '^layer' || true
  "$L" image "$WORK/layout" rss:4 gzip "$WORK/rss4" | grep -v '^layer' || true
  echo "layout with the two memory images: $(du -sh "$WORK/layout" | cut -f1)"
fi
rm -rf "$WORK"/src? "$WORK"/rss?
# The fresh filesystem of the one and the two passes: room for the
# store and the snapshots of bench:1 (about 3.5x its compressed size),
# and a margin.
freshfs_init "$WORK" $(( $(du -sm "$WORK/layout/blobs" | cut -f1) * 4 + 512 ))

# registry NAME PORT: a docker-registry with empty storage in WORK/NAME;
# sets PID.
registry() {
  local dir=$WORK/$1 port=$2
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: bench
EOF
  env -u REGISTRY_HTTP_ADDR docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "the registry did not start: $(cat "$dir/log")"
}
# The pulls' registry, seeded once below; the pushes go to a second one,
# emptied before each push (a registry that has the blobs lets skopeo
# mount them from where its blob-info cache saw them, and then it uploads
# nothing).
registry registry "$PORT"; REG_PID=$PID
P=127.0.0.1:$((PORT + 1))
fresh_push_registry() {
  if [ -n "$PUSH_PID" ]; then kill "$PUSH_PID"; wait "$PUSH_PID" 2>/dev/null || true; fi
  registry push $((PORT + 1)); PUSH_PID=$PID
}
R=127.0.0.1:$PORT
SRC=docker.io/library/bench:1

# t CMD... : runs CMD, sets T (seconds) and RSS (KiB, peak of the largest process).
t() {
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.out" "$@" >/dev/null 2>"$WORK/err.out" || {
    echo "FAILED: $*"; cat "$WORK/err.out"; exit 1; }
  read -r T RSS U S < <(tail -1 "$WORK/time.out")
  CPU=$(echo "$U + $S" | bc -l)
}
stats() { # stats VALUES... : median (min..max)
  python3 - "$@" <<'PY'
import sys, statistics
v = sorted(float(x) for x in sys.argv[1:])
print(f"{statistics.median(v):.2f} ({v[0]:.2f}..{v[-1]:.2f})")
PY
}
ratio() { echo "scale=3; $1 / $2" | bc -l; }

# The pulls need the image in the registry: one push by each tool first.
"$IMAGECTL" --store "$WORK/layout" push bench:1 "$R/seed/ours:1" --insecure --quiet >/dev/null
[ "$ONLY" = unpack ] ||
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/layout:$SRC" "docker://$R/seed/skopeo:1"

# Where the one and the two passes pull from: the registry, or with RATE
# the rate-limited proxy in front of it.
FROM=$R
if [ -n "$RATE" ]; then
  python3 "$ROOT/bench/rate_proxy.py" $((PORT + 2)) "$PORT" "$RATE" > "$WORK/proxy.out" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 100); do grep -q ready "$WORK/proxy.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$WORK/proxy.out" || fail "the rate proxy did not start: $(cat "$WORK/proxy.out")"
  FROM=127.0.0.1:$((PORT + 2))
  echo "== the one and the two passes pull through a link of $RATE (bench/rate_proxy.py)"
fi
# A fresh filesystem, the page cache dropped, the registry's blobs read
# back in.
fresh() {
  freshfs_new
  freshfs_drop
  find "$WORK/registry/storage" -type f -exec cat {} + > /dev/null
}
F=$FRESHFS_MNT

declare -a PUSH_OURS PUSH_THEIRS PUSH_R PULL_OURS PULL_THEIRS PULL_R ONE TWO ONE_R TWO_PULL TWO_UNPACK CPU_ONE CPU_TWO CPU_PULL CPU_UNPACK
echo "== $RUNS repetitions (times to exit, seconds)"
for i in $(seq "$RUNS"); do
  ours_push() { fresh_push_registry; t "$IMAGECTL" --store "$WORK/layout" push bench:1 "$P/ours$i/bench:1" --insecure --quiet; PO=$T; }
  theirs_push() { fresh_push_registry; t skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/layout:$SRC" "docker://$P/skopeo$i/bench:1"; PT=$T; }
  ours_pull() { rm -rf "$WORK/pull"; t "$IMAGECTL" --store "$WORK/pull" pull "$R/seed/ours:1" --insecure --quiet; LO=$T; }
  theirs_pull() { rm -rf "$WORK/sk"; t skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$R/seed/ours:1" "oci:$WORK/sk:bench"; LT=$T; }
  if [ "$ONLY" != unpack ]; then
    if [ $((i % 2)) -eq 1 ]; then ours_push; theirs_push; ours_pull; theirs_pull
    else theirs_push; ours_push; theirs_pull; ours_pull; fi
    PUSH_OURS+=("$PO"); PUSH_THEIRS+=("$PT"); PUSH_R+=("$(ratio "$PT" "$PO")")
    PULL_OURS+=("$LO"); PULL_THEIRS+=("$LT"); PULL_R+=("$(ratio "$LT" "$LO")")
  fi
  # One pass against pull then unpack, each on a fresh filesystem.
  one_pass() { fresh; t "$IMAGECTL" --store "$F/store" pull "$FROM/seed/ours:1" --insecure --quiet --unpack --snapshots "$F/snap" --snapshotter overlay; O1=$T; C1=$CPU; }
  two_pass() {
    fresh
    t "$IMAGECTL" --store "$F/store" pull "$FROM/seed/ours:1" --insecure --quiet; local a=$T c=$CPU
    t "$IMAGECTL" --store "$F/store" unpack "$FROM/seed/ours:1" "$F/snap" --driver overlay --quiet
    O2=$(echo "$a + $T" | bc -l); O2_PULL=$a; O2_UNPACK=$T; C2=$(echo "$c + $CPU" | bc -l); C2_PULL=$c; C2_UNPACK=$CPU
  }
  if [ $((i % 2)) -eq 1 ]; then one_pass; two_pass; else two_pass; one_pass; fi
  ONE+=("$O1"); TWO+=("$O2"); ONE_R+=("$(ratio "$O2" "$O1")")
  TWO_PULL+=("$O2_PULL"); TWO_UNPACK+=("$O2_UNPACK"); CPU_ONE+=("$C1"); CPU_TWO+=("$C2")
  CPU_PULL+=("$C2_PULL"); CPU_UNPACK+=("$C2_UNPACK")
  if [ "$ONLY" != unpack ]; then
    printf "  run %d: push ours %6.2f skopeo %6.2f | pull ours %6.2f skopeo %6.2f | " "$i" "$PO" "$PT" "$LO" "$LT"
  else
    printf "  run %d: " "$i"
  fi
  printf "pull --unpack %6.2f (cpu %5.2f), pull+unpack %6.2f (cpu %5.2f)\n" "$O1" "$C1" "$O2" "$C2"
done
rm -rf "$WORK/pull" "$WORK/sk"

if [ "$ONLY" != unpack ]; then
  echo "== peak memory (max RSS, KiB): our pull and push of one layer of ${RSS_MB} MiB and of $((RSS_MB * 4)) MiB"
  for tag in rss:1 rss:4; do
    rm -rf "$WORK/m"
    fresh_push_registry
    t "$IMAGECTL" --store "$WORK/layout" push "$tag" "$P/mem/${tag/:/}:1" --insecure --quiet; PUSH_RSS=$RSS
    "$IMAGECTL" --store "$WORK/layout" push "$tag" "$R/mem/${tag/:/}:1" --insecure --quiet >/dev/null
    t "$IMAGECTL" --store "$WORK/m" pull "$R/mem/${tag/:/}:1" --insecure --quiet; PULL_RSS=$RSS
    printf "  %-6s push %8d KiB   pull %8d KiB\n" "$tag" "$PUSH_RSS" "$PULL_RSS"
  done
fi

echo "== results over $RUNS runs: median (min..max); ratios theirs/ours, above 1 means we are faster"
if [ "$ONLY" != unpack ]; then
  echo "push:  ours $(stats "${PUSH_OURS[@]}") s, skopeo $(stats "${PUSH_THEIRS[@]}") s, ratio $(stats "${PUSH_R[@]}")  (goal >= 1.5)"
  echo "pull:  ours $(stats "${PULL_OURS[@]}") s, skopeo $(stats "${PULL_THEIRS[@]}") s, ratio $(stats "${PULL_R[@]}")  (goal >= 1.5)"
fi
echo "unpack: pull --unpack $(stats "${ONE[@]}") s, pull then unpack $(stats "${TWO[@]}") s, ratio $(stats "${ONE_R[@]}")  (goal >= 1.3)${RATE:+, through a link of $RATE}"
# The breakdown: the one pass can at best hide the pull behind the
# unpack, so the unpack alone bounds it from below.
echo "        pull then unpack = pull $(stats "${TWO_PULL[@]}") s + unpack $(stats "${TWO_UNPACK[@]}") s; the one pass against the unpack alone: $(python3 -c "import statistics as s,sys; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f'{s.median(a)/s.median(b):.2f}x')" "${ONE[*]}" "${TWO_UNPACK[*]}")"
# CPU (user + system, seconds): on N cores neither form can take less
# wall time than its CPU time / N, so overlapping the download only helps
# where the unpack leaves cores idle.
echo "        CPU time: pull --unpack $(stats "${CPU_ONE[@]}") s, pull then unpack $(stats "${CPU_TWO[@]}") s (pull $(stats "${CPU_PULL[@]}") + unpack $(stats "${CPU_UNPACK[@]}")), on $(nproc) CPUs"
echo "== $(uptime | sed 's/.*load/load/')"
