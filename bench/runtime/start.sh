#!/usr/bin/env bash
# Start-to-exit latency of `true` in a container: the native backend
# (in-process loop, and one `native_run` process per container) against
# `runc run` and `crun run` of the same bundle, and `podman run --rootfs`
# when installed; medians over N runs, printed side by side with ratios.
# crun 1.8 refuses hybrid cgroups: it runs inside one private mount
# namespace where /sys/fs/cgroup/unified is unmounted and each v1 hierarchy
# whose own cgroup is not its root is replaced by a bind of our cgroup (as
# image-runtime's OciRuntime does; see image-runtime/NOTES.md).
# Then the native in-process start's breakdown: its create/start/wait/delete
# parts, and the child's own phases (IMAGE_RUNTIME_START_TRACE=1 runs).
# Usage (root): bench/runtime/start.sh [N] (default 50)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-50}
cargo build --release -q -p image-runtime --example native_run
bin=target/release/examples/native_run
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
bundle=$scratch/bundle
"$bin" bundle "$bundle" true

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }
now_ms() { echo $(( $(date +%s%N) / 1000 )); }   # microseconds
loop() { # loop NAME CMD...: prints per-run ms of "$@"
  for i in $(seq "$n"); do
    t0=$(date +%s%N); "$@" "$i" > /dev/null 2>&1; t1=$(date +%s%N)
    echo "scale=3; ($t1 - $t0) / 1000000" | bc -l
  done
}

"$bin" run "$bundle" "$n" > "$scratch/lib.txt"
ours_lib=$(median < "$scratch/lib.txt")
col_median() { awk -v c="$1" '{print $c}' "$scratch/lib.txt" | median; }
# The child's own timing of each start (ms since the clone), traced runs.
IMAGE_RUNTIME_START_TRACE=1 "$bin" run "$bundle" "$n" 2> "$scratch/trace.txt" > /dev/null
phase_median() { # the median of "NAME x.xx" over the trace lines
  grep -o "$1 [0-9.]*" "$scratch/trace.txt" | awk '{print $NF}' | median; }
run_ours() { "$bin" run "$bundle" 1; }
ours_cli=$(loop run_ours | median)
run_runc() { runc --root "$scratch/runc" run -b "$bundle" "b-runc-$1"; }
runc_ms=$(loop run_runc | median)

# crun: one private mount namespace for the whole loop.
export -f median
crun_ms=$(unshare -m --propagation private bash -s "$bundle" "$scratch" "$n" <<'INNER'
set -euo pipefail
bundle=$1 scratch=$2 n=$3
u=$(awk '$9=="cgroup2"{print $5}' /proc/self/mountinfo | head -1)
[ -n "$u" ] && { umount "$u" 2>/dev/null || umount -l "$u"; }
while IFS=: read -r _ ctrl path; do
  [ -z "$ctrl" ] && continue; [ "$path" = / ] && continue
  mp=$(awk -v c="$ctrl" '$9=="cgroup" && index($NF, c) {print $5}' /proc/self/mountinfo | head -1)
  [ -n "$mp" ] && mount --bind "$mp$path" "$mp"
done < /proc/self/cgroup
for i in $(seq "$n"); do
  t0=$(date +%s%N); crun --root "$scratch/crun" run -b "$bundle" "b-crun-$i" > /dev/null 2>&1; t1=$(date +%s%N)
  echo "scale=3; ($t1 - $t0) / 1000000" | bc -l
done | median
INNER
)

podman_ms=""
if command -v podman > /dev/null; then
  run_podman() { podman run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
      --network none --rootfs "$bundle/rootfs" /bin/true; }
  if run_podman 0 > /dev/null 2>&1; then podman_ms=$(loop run_podman | median); fi
fi

ratio() { echo "scale=2; $1 / $2" | bc -l; }
printf 'start+wait of `true` in a container, median of %d runs (ms)\n' "$n"
printf '  native, in-process (library)   %8s\n' "$ours_lib"
printf '  native_run, a process per run  %8s\n' "$ours_cli"
printf '  crun run                       %8s\n' "$crun_ms"
printf '  runc run                       %8s\n' "$runc_ms"
[ -n "$podman_ms" ] && printf '  podman run --rm (runc)         %8s\n' "$podman_ms"
printf 'native in-process, its parts (medians, ms): create %s, start %s, wait %s, delete %s\n' \
  "$(col_median 2)" "$(col_median 3)" "$(col_median 4)" "$(col_median 5)"
printf 'native start, in the child (traced runs, medians, ms since the clone):\n '
for p in released "root set up" "hostname, loopback" "in its cgroups" credentials "before execve" \
    "execve seen"; do
  printf ' %s %s;' "$p" "$(phase_median "$p")"
done
printf '\n'
printf 'ratios (their time / ours, >= 1 means we are faster; goal: >= 1 against crun)\n'
printf '  crun / native in-process   %s\n' "$(ratio "$crun_ms" "$ours_lib")"
printf '  crun / native_run process  %s\n' "$(ratio "$crun_ms" "$ours_cli")"
printf '  runc / native in-process   %s\n' "$(ratio "$runc_ms" "$ours_lib")"
[ -n "$podman_ms" ] && printf '  podman / native in-process %s\n' "$(ratio "$podman_ms" "$ours_lib")"
exit 0
