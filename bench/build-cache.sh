#!/usr/bin/env bash
# The build cache beyond one machine: a build on a fresh store that imports
# the cache another store exported (`--cache-from type=local,src=DIR`),
# against a fully cached rebuild on the store that exported it, in the same
# run; prints medians, min..max and the ratio. Goal: under 2x.
#
#   bench/build-cache.sh [FILES]   (as root; FILES: the COPY's file count, default 1000)
#
# RUNS=N repetitions (default 2); WORK=DIR puts the data elsewhere (default:
# a temp dir under /var/tmp, removed at the end).
#
# The Dockerfile is part 1's ten-step bench Dockerfile (bench/build.sh):
# RUN, a COPY of FILES files, WORKDIR, another COPY, RUN, config steps. The
# base is busybox-static appended into a store by imagectl and copied, as
# a pull would, into each fresh store before the clock starts. Each
# repetition times, in turn: the cached rebuild on the exporting store;
# then a fresh store (another directory, standing for another machine, and
# another copy of the context at another path) building with the cache
# imported (the import's copy of the layers is in the time). Both must
# give the same image ID and run no step.
set -euo pipefail
FILES=${1:-1000}
RUNS=${RUNS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /var/tmp/build-cache-bench.XXXXXX)}
mkdir -p "$WORK"
cleanup() {
  findmnt -rno TARGET | grep "^$WORK/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "build-cache.sh: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (our RUN containers and snapshots)"
for t in bc python3; do command -v $t >/dev/null || fail "$t is not installed"; done

cargo build --release -q -p imagectl --bin imagectl --manifest-path "$ROOT/Cargo.toml"
IMAGECTL=$ROOT/target/release/imagectl
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK ($(findmnt -no FSTYPE -T "$WORK"))"

# --- the context (the same bytes every time), the Dockerfile, the base
. "$ROOT/bench/build-common.sh"
mkdir -p "$WORK/ctx-a"
gen "$WORK/ctx-a/files" "$FILES"
echo "name=bench" > "$WORK/ctx-a/config.txt"
ten_dockerfile "$WORK/ctx-a/Dockerfile"
ROOTFS=$WORK/rootfs
base_rootfs "$ROOTFS"
"$IMAGECTL" --store "$WORK/base-store" append --rootfs "$ROOTFS" --tag bench/busybox:latest \
  --env PATH=/bin --cmd sh >/dev/null
"$IMAGECTL" --store "$WORK/base-store" copy bench/busybox:latest "oci:$WORK/base-layout:bench/busybox:latest" >/dev/null
fresh() { "$IMAGECTL" --store "$WORK/$1/store" copy "oci:$WORK/base-layout:bench/busybox:latest" bench/busybox:latest >/dev/null; }
build() { # build MACHINE CONTEXT [FLAGS...]
  "$IMAGECTL" --store "$WORK/$1/store" build --progress plain --iidfile "$WORK/iid" -t bench/ten "${@:3}" "$WORK/$2"
}

# --- store A: the first build, exporting its cache
fresh a
build a ctx-a --cache-to "type=local,dest=$WORK/cache,mode=max" >"$WORK/out.log" 2>&1 \
  || { cat "$WORK/out.log" >&2; fail "the first build on A"; }
cp "$WORK/iid" "$WORK/iid.a"

RESULTS=$WORK/results
: > "$RESULTS"
timed() { # timed MEASURE CMD...
  local measure=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@" >"$WORK/out.log" 2>&1 || { cat "$WORK/out.log" >&2; fail "$measure: $*"; }
  t1=$(date +%s.%N)
  grep -q ' steps, \([0-9]*\) cached' "$WORK/out.log" || fail "$measure: no summary"
  local summary
  summary=$(grep -o '[0-9]* steps, [0-9]* cached' "$WORK/out.log")
  echo "$measure $(echo "$t1 - $t0" | bc -l)" >> "$RESULTS"
  printf "  %-9s %7.3fs  (%s)\n" "$measure" "$(echo "$t1 - $t0" | bc -l)" "$summary"
  set -- $summary
  [ "$1" = "$3" ] || fail "$measure: a step ran ($summary)"
  cmp -s "$WORK/iid" "$WORK/iid.a" || fail "$measure: another image: $(cat "$WORK/iid.a") then $(cat "$WORK/iid")"
}

echo "== cached rebuild on the exporting store vs a fresh store importing its cache, $RUNS runs ($FILES-file COPY)"
for i in $(seq "$RUNS"); do
  timed cached build a ctx-a
  fresh "b$i"
  mkdir -p "$WORK/elsewhere$i"
  cp -a "$WORK/ctx-a" "$WORK/elsewhere$i/ctx"
  timed imported build "b$i" "elsewhere$i/ctx" --cache-from "type=local,src=$WORK/cache"
  findmnt -rno TARGET | grep "^$WORK/b$i/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$WORK/b$i" "$WORK/elsewhere$i"
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    m, s = line.split()
    t.setdefault(m, []).append(float(s))
for m, v in t.items():
    print(f"  {m:<9} median {statistics.median(v):.3f}s  min..max {min(v):.3f}..{max(v):.3f}s  ({len(v)} runs)")
r = statistics.median(t["imported"]) / statistics.median(t["cached"])
print(f"== imported / cached = {r:.2f}x (goal < 2x): {'ok' if r < 2 else 'MISSED'}")
PY
