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
# RUNS=N repetitions (default 5); WORK=DIR puts the data elsewhere
# (default: a temp dir under /var/tmp, removed at the end); PORT the
# registry's port (default 5057). Needs root for the overlay snapshots.
set -euo pipefail
FILES=${1:-12000}
LARGE_MB=${2:-256}
RSS_MB=${3:-64}
RUNS=${RUNS:-5}
PORT=${PORT:-5057}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /var/tmp/registry-bench.XXXXXX)}
mkdir -p "$WORK"
REG_PID=
PUSH_PID=
cleanup() {
  for p in $REG_PID $PUSH_PID; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  findmnt -rno TARGET | grep "^$WORK/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "registry.sh: FAILED: $*" >&2; exit 1; }
for t in skopeo docker-registry python3 bc /usr/bin/time; do
  command -v $t >/dev/null || fail "$t is not installed"
done

cargo build --release -q -p imagectl --bin imagectl --manifest-path "$ROOT/Cargo.toml"
cargo build --release -q -p image-overlay --example layer --manifest-path "$ROOT/Cargo.toml"
IMAGECTL=${IMAGECTL:-$ROOT/target/release/imagectl}
L="$ROOT/target/release/examples/layer"
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK ($(findmnt -no FSTYPE -T "$WORK"))"

# The generator of bench/overlay/unpack.sh: the same image.
gen() { python3 "$ROOT/bench/gen_tree.py" "$@"; }

echo "== generating 3 layers x $FILES files + a ${LARGE_MB} MiB layer"
for i in 1 2 3; do gen "$WORK/src$i" "$FILES" 0 "$i"; done
gen "$WORK/src4" 0 "$LARGE_MB" 4
"$L" image "$WORK/layout" bench:1 gzip "$WORK"/src? | grep -v '^layer' || true
gen "$WORK/rss1" 0 "$RSS_MB" 5
gen "$WORK/rss4" 0 $((RSS_MB * 4)) 6
"$L" image "$WORK/layout" rss:1 gzip "$WORK/rss1" | grep -v '^layer' || true
"$L" image "$WORK/layout" rss:4 gzip "$WORK/rss4" | grep -v '^layer' || true
rm -rf "$WORK"/src? "$WORK"/rss?
echo "compressed image: $(du -sh "$WORK/layout" | cut -f1) in the layout (bench:1 and the two memory images)"

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
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/layout:$SRC" "docker://$R/seed/skopeo:1"

declare -a PUSH_OURS PUSH_THEIRS PUSH_R PULL_OURS PULL_THEIRS PULL_R ONE TWO ONE_R TWO_PULL TWO_UNPACK CPU_ONE CPU_TWO
echo "== $RUNS repetitions (times to exit, seconds)"
for i in $(seq "$RUNS"); do
  ours_push() { fresh_push_registry; t "$IMAGECTL" --store "$WORK/layout" push bench:1 "$P/ours$i/bench:1" --insecure --quiet; PO=$T; }
  theirs_push() { fresh_push_registry; t skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/layout:$SRC" "docker://$P/skopeo$i/bench:1"; PT=$T; }
  ours_pull() { rm -rf "$WORK/pull"; t "$IMAGECTL" --store "$WORK/pull" pull "$R/seed/ours:1" --insecure --quiet; LO=$T; }
  theirs_pull() { rm -rf "$WORK/sk"; t skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$R/seed/ours:1" "oci:$WORK/sk:bench"; LT=$T; }
  if [ $((i % 2)) -eq 1 ]; then ours_push; theirs_push; ours_pull; theirs_pull
  else theirs_push; ours_push; theirs_pull; ours_pull; fi
  # One pass against pull then unpack, each into a fresh store and
  # snapshot directory.
  one_pass() { rm -rf "$WORK/p1"; t "$IMAGECTL" --store "$WORK/p1/store" pull "$R/seed/ours:1" --insecure --quiet --unpack --snapshots "$WORK/p1/snap" --snapshotter overlay; O1=$T; C1=$CPU; }
  two_pass() {
    rm -rf "$WORK/p2"
    t "$IMAGECTL" --store "$WORK/p2/store" pull "$R/seed/ours:1" --insecure --quiet; local a=$T c=$CPU
    t "$IMAGECTL" --store "$WORK/p2/store" unpack "$R/seed/ours:1" "$WORK/p2/snap" --driver overlay --quiet
    O2=$(echo "$a + $T" | bc -l); O2_PULL=$a; O2_UNPACK=$T; C2=$(echo "$c + $CPU" | bc -l)
  }
  if [ $((i % 2)) -eq 1 ]; then one_pass; two_pass; else two_pass; one_pass; fi
  PUSH_OURS+=("$PO"); PUSH_THEIRS+=("$PT"); PUSH_R+=("$(ratio "$PT" "$PO")")
  PULL_OURS+=("$LO"); PULL_THEIRS+=("$LT"); PULL_R+=("$(ratio "$LT" "$LO")")
  ONE+=("$O1"); TWO+=("$O2"); ONE_R+=("$(ratio "$O2" "$O1")")
  TWO_PULL+=("$O2_PULL"); TWO_UNPACK+=("$O2_UNPACK"); CPU_ONE+=("$C1"); CPU_TWO+=("$C2")
  printf "  run %d: push ours %6.2f skopeo %6.2f | pull ours %6.2f skopeo %6.2f | pull --unpack %6.2f, pull+unpack %6.2f\n" \
    "$i" "$PO" "$PT" "$LO" "$LT" "$O1" "$O2"
done
rm -rf "$WORK/pull" "$WORK/sk" "$WORK/p1" "$WORK/p2"

echo "== peak memory (max RSS, KiB): our pull and push of one layer of ${RSS_MB} MiB and of $((RSS_MB * 4)) MiB"
for tag in rss:1 rss:4; do
  rm -rf "$WORK/m"
  fresh_push_registry
  t "$IMAGECTL" --store "$WORK/layout" push "$tag" "$P/mem/${tag/:/}:1" --insecure --quiet; PUSH_RSS=$RSS
  "$IMAGECTL" --store "$WORK/layout" push "$tag" "$R/mem/${tag/:/}:1" --insecure --quiet >/dev/null
  t "$IMAGECTL" --store "$WORK/m" pull "$R/mem/${tag/:/}:1" --insecure --quiet; PULL_RSS=$RSS
  printf "  %-6s push %8d KiB   pull %8d KiB\n" "$tag" "$PUSH_RSS" "$PULL_RSS"
done

echo "== results over $RUNS runs: median (min..max); ratios theirs/ours, above 1 means we are faster"
echo "push:  ours $(stats "${PUSH_OURS[@]}") s, skopeo $(stats "${PUSH_THEIRS[@]}") s, ratio $(stats "${PUSH_R[@]}")  (goal >= 1.5)"
echo "pull:  ours $(stats "${PULL_OURS[@]}") s, skopeo $(stats "${PULL_THEIRS[@]}") s, ratio $(stats "${PULL_R[@]}")  (goal >= 1.5)"
echo "unpack: pull --unpack $(stats "${ONE[@]}") s, pull then unpack $(stats "${TWO[@]}") s, ratio $(stats "${ONE_R[@]}")  (goal >= 1.3)"
# The breakdown: the one pass can at best hide the pull behind the
# unpack, so the unpack alone bounds it from below.
echo "        pull then unpack = pull $(stats "${TWO_PULL[@]}") s + unpack $(stats "${TWO_UNPACK[@]}") s; the one pass against the unpack alone: $(python3 -c "import statistics as s,sys; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f'{s.median(a)/s.median(b):.2f}x')" "${ONE[*]}" "${TWO_UNPACK[*]}")"
# CPU (user + system, seconds): on N cores neither form can take less
# wall time than its CPU time / N, so overlapping the download only helps
# where the unpack leaves cores idle.
echo "        CPU time: pull --unpack $(stats "${CPU_ONE[@]}") s, pull then unpack $(stats "${CPU_TWO[@]}") s, on $(nproc) CPUs"
echo "== $(uptime | sed 's/.*load/load/')"
