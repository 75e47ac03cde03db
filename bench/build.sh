#!/usr/bin/env bash
# Dockerfile builds, ours (`imagectl build`) against `buildah build --layers`
# in the same run, on the same generated contexts and the same base image;
# prints medians, min..max and ratios.
#
#   bench/build.sh [FILES]        (as root; FILES: the COPY's file count, default 1000)
#
# RUNS=N repetitions (default 5); WORK=DIR puts the data elsewhere (default:
# a temp dir under /var/tmp, removed at the end); OURS=0 times buildah alone.
#
# The base: busybox-static as bench/busybox:latest, made into our store by
# the builder API (image-build's busybox_image example; `imagectl append` of
# the same root filesystem when that example is absent), copied to an OCI
# layout and pulled from there into buildah's storage: both build FROM the
# very same image. buildah runs on isolated storage under WORK
# (`--root`/`--runroot`, never /var/lib/containers), with
# `--storage-driver overlay`: our builds keep their layers as overlay
# snapshots, and vfs would copy the whole tree at every step, timing
# buildah's driver rather than its build. Both run RUN with no network
# (ours by default, buildah `--network none`); buildah isolates RUN as it
# does by default for root, in an OCI runtime, here `--runtime runc` (its
# default, crun 1.8, refuses this machine's hybrid cgroups).
#
# Three measures, each tool in turn within a repetition, so drift on a
# shared machine hits both alike:
# 1. cold: the small Dockerfile (RUN + COPY of FILES files + ENV + CMD)
#    into a fresh store / fresh buildah storage holding only the base
#    (made before the clock starts). Goal: ours at most half buildah's time.
# 2. cached: the ten-step Dockerfile built once, then rebuilt with nothing
#    changed, timed. Goals: ours under 100 ms; the same image ID again.
# 3. change: one line of one copied file changed (a new line each run, so
#    it is never cached), the ten-step Dockerfile rebuilt, timed. Goal:
#    only the steps from that COPY on run again, checked on the result:
#    the layers before the COPY are the ones of the build before (a RUN
#    run again would make a new layer: its files get new mtimes).
set -euo pipefail
FILES=${1:-1000}
RUNS=${RUNS:-5}
OURS=${OURS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /var/tmp/build-bench.XXXXXX)}
mkdir -p "$WORK"
cleanup() {
  # buildah's overlay mounts and our snapshots' mounts, deepest first.
  findmnt -rno TARGET | grep "^$WORK/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "build.sh: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (buildah's overlay storage, our RUN containers)"
for t in buildah skopeo bc python3; do
  command -v $t >/dev/null || fail "$t is not installed (scripts/install-deps.sh installs the peers)"
done

cargo build --release -q -p imagectl --bin imagectl --manifest-path "$ROOT/Cargo.toml"
IMAGECTL=$ROOT/target/release/imagectl
MAKE_BASE=
if [ -f "$ROOT/image-build/examples/busybox_image.rs" ]; then
  cargo build --release -q -p image-build --example busybox_image --manifest-path "$ROOT/Cargo.toml"
  MAKE_BASE=$ROOT/target/release/examples/busybox_image
fi
if [ "$OURS" = 1 ] && ! "$IMAGECTL" build --help >/dev/null 2>&1; then
  echo "== this imagectl has no build command: timing buildah alone (OURS=0)"
  OURS=0
fi
echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'), data in $WORK ($(findmnt -no FSTYPE -T "$WORK")), $(buildah --version)"

# --- the contexts and Dockerfiles
. "$ROOT/bench/build-common.sh"
for ctx in small ten; do
  mkdir -p "$WORK/$ctx"
  gen "$WORK/$ctx/files" "$FILES"
  echo "name=bench" > "$WORK/$ctx/config.txt"
done
cat > "$WORK/small/Dockerfile" <<'EOF'
FROM bench/busybox:latest
RUN mkdir -p /app && echo built > /app/built.txt
COPY files/ /app/files/
ENV APP=/app
CMD ["cat", "/app/built.txt"]
EOF
ten_dockerfile "$WORK/ten/Dockerfile"
# Layer-making steps of ten before its first COPY (on top of the base's).
TEN_BEFORE_COPY=1
CHANGED=$WORK/ten/files/d3/f0003.txt

# --- the base, once, as an OCI layout both load from
ROOTFS=$WORK/rootfs
base_rootfs "$ROOTFS"
BASE_STORE=$WORK/base-store
if [ -n "$MAKE_BASE" ]; then
  "$MAKE_BASE" "$BASE_STORE" bench/busybox:latest >/dev/null
else
  "$IMAGECTL" --store "$BASE_STORE" append --rootfs "$ROOTFS" --tag bench/busybox:latest \
    --env PATH=/bin --cmd sh >/dev/null
fi
"$IMAGECTL" --store "$BASE_STORE" copy bench/busybox:latest "oci:$WORK/base-layout:bench/busybox:latest" >/dev/null

# Fresh storage holding only the base, made before the clock starts.
ba() { buildah --root "$WORK/buildah/$1/root" --runroot "$WORK/buildah/$1/run" --storage-driver overlay "${@:2}"; }
fresh_buildah() { # fresh_buildah NAME (skopeo names the image; buildah pull would name it after the layout's path)
  skopeo copy -q "oci:$WORK/base-layout:docker.io/bench/busybox:latest" \
    "containers-storage:[overlay@$WORK/buildah/$1/root+$WORK/buildah/$1/run]localhost/bench/busybox:latest" >/dev/null
}
drop_buildah() {
  ba "$1" rmi -a -f >/dev/null 2>&1 || true
  findmnt -rno TARGET | grep "^$WORK/buildah/$1/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$WORK/buildah/$1"
}
fresh_ours() { # fresh_ours NAME: a store with the base (copied from the layout)
  "$IMAGECTL" --store "$WORK/ours/$1/store" copy "oci:$WORK/base-layout:bench/busybox:latest" bench/busybox:latest >/dev/null
}
drop_ours() {
  findmnt -rno TARGET | grep "^$WORK/ours/$1/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$WORK/ours/$1"
}
build_buildah() { # build_buildah NAME CONTEXT TAG [FLAGS...]
  ba "$1" build --layers --pull=never --network none --runtime runc -q --iidfile "$WORK/iid" -t "$3" "${@:4}" "$WORK/$2"
}
build_ours() { # build_ours NAME CONTEXT TAG [FLAGS...]
  "$IMAGECTL" --store "$WORK/ours/$1/store" build --progress plain --iidfile "$WORK/iid" -t "$3" "${@:4}" "$WORK/$2"
}
# diff IDs of an image, one a line
diff_ids_buildah() { ba "$1" inspect --type image "$2" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["OCIv1"]["rootfs"]["diff_ids"]))'; }
diff_ids_ours() { "$IMAGECTL" --store "$WORK/ours/$1/store" inspect "$2" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["config"]["rootfs"]["diff_ids"]))'; }

RESULTS=$WORK/results
: > "$RESULTS"
# timed MEASURE TOOL CMD...: runs CMD, appends "MEASURE TOOL seconds" to the results.
timed() {
  local measure=$1 tool=$2 t0 t1
  shift 2
  t0=$(date +%s.%N)
  "$@" >"$WORK/out.log" 2>&1 || { cat "$WORK/out.log" >&2; fail "$tool: $measure: $*"; }
  t1=$(date +%s.%N)
  echo "$measure $tool $(echo "$t1 - $t0" | bc -l)" >> "$RESULTS"
  printf "  %-7s %-8s %7.3fs\n" "$measure" "$tool" "$(echo "$t1 - $t0" | bc -l)"
}
TOOLS=(buildah)
[ "$OURS" = 1 ] && TOOLS+=(ours)

echo "== 1. cold build of the small Dockerfile (RUN + COPY of $FILES files + ENV + CMD), $RUNS runs"
for i in $(seq "$RUNS"); do
  for tool in "${TOOLS[@]}"; do
    "fresh_$tool" "cold$i"
    timed cold "$tool" "build_$tool" "cold$i" small bench/small
    "drop_$tool" "cold$i"
  done
done

echo "== 2. fully cached rebuild of the ten-step Dockerfile ($FILES-file COPY), $RUNS runs"
for tool in "${TOOLS[@]}"; do
  "fresh_$tool" warm
  "build_$tool" warm ten bench/ten >"$WORK/out.log" 2>&1 || { cat "$WORK/out.log" >&2; fail "$tool: the first build of ten"; }
  cp "$WORK/iid" "$WORK/iid.$tool"
done
for i in $(seq "$RUNS"); do
  for tool in "${TOOLS[@]}"; do
    timed cached "$tool" "build_$tool" warm ten bench/ten
    cmp -s "$WORK/iid" "$WORK/iid.$tool" || echo "  $tool: the cached rebuild made another image: $(cat "$WORK/iid.$tool") then $(cat "$WORK/iid")"
  done
done

echo "== 3. one line of one copied file changed, the ten-step Dockerfile rebuilt, $RUNS runs"
REUSED=$WORK/reused
: > "$REUSED"
for i in $(seq "$RUNS"); do
  for tool in "${TOOLS[@]}"; do
    "diff_ids_$tool" warm bench/ten > "$WORK/before"
    sed -i "1s/.*/changed by run $i for $tool/" "$CHANGED"
    timed change "$tool" "build_$tool" warm ten bench/ten
    "diff_ids_$tool" warm bench/ten > "$WORK/after"
    # Layers kept: the common prefix of the two lists.
    kept=$(paste -d' ' "$WORK/before" "$WORK/after" | awk '$1 == $2 { n++; next } { exit } END { print n + 0 }')
    echo "$tool $kept $(wc -l < "$WORK/before")" >> "$REUSED"
  done
done
for tool in "${TOOLS[@]}"; do "drop_$tool" warm; done

echo "== medians (min..max) of $RUNS runs, seconds, $(uptime | sed 's/.*load/load/'); ratios: buildah / ours (above 1: we are faster)"
python3 - "$RESULTS" "$REUSED" "$TEN_BEFORE_COPY" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
runs = {}
for measure, tool, t in rows:
    runs.setdefault((measure, tool), []).append(float(t))
med = lambda k: statistics.median(runs[k]) if k in runs else None
for (measure, tool), v in runs.items():
    v = sorted(v)
    print(f"{measure:7} {tool:8} {statistics.median(v):7.3f} ({v[0]:.3f}..{v[-1]:.3f})")
for measure, goal in (("cold", "ratio >= 2 (ours at most half buildah's time)"),
                      ("cached", "ours < 0.100 s"),
                      ("change", None)):
    b, o = med((measure, "buildah")), med((measure, "ours"))
    if b is None or o is None:
        continue
    line = f"ratio {measure}: buildah / ours = {b / o:.2f}"
    if measure == "cold":
        line += f"   goal {goal}: " + ("met" if b / o >= 2 else "NOT met")
    if measure == "cached":
        line += f"   goal {goal}: " + ("met" if o < 0.1 else "NOT met")
    print(line)
# Layers of ten before its first COPY: the base's, plus TEN_BEFORE_COPY.
before_copy = int(sys.argv[3])
for line in open(sys.argv[2]):
    tool, kept, total = line.split()
    kept, total = int(kept), int(total)
    # ten makes 4 layers (RUN, COPY, COPY, RUN) on the base's.
    base = total - 4
    want = base + before_copy
    verdict = "only from that step" if kept == want else f"NOT only from that step (want {want} kept)"
    print(f"change {tool:8}: kept {kept} of {total} layers: rebuilt {verdict}")
PY
