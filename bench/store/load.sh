#!/usr/bin/env bash
# Store speed, side by side with the peers, in one run; prints ratios.
#
# 1. Loading a docker-save archive: our `load` example (what `imagectl load`
#    does: one streaming pass, hash while writing, fsync, rename) against
#    `skopeo copy docker-archive:X oci:DIR:tag` of the same archive.
# 2. Ingesting a 1 GiB file (read, hash, write, fsync, rename: one pass)
#    against `cp` + `sync` + `openssl dgst -sha256` (two passes).
# The page cache is dropped before every timed run (needs root).
#
# Usage: bench/store/load.sh [LAYER_MIB] [LAYERS] [INGEST_MIB]
#        defaults: 4 layers of 64 MiB, 1024 MiB ingest; RUNS=3 (best of);
#        SKIP_BUILD=1 reuses target/release/examples/load.
set -euo pipefail
cd "$(dirname "$0")/../.."
layer_mib=${1:-64}
layers=${2:-4}
ingest_mib=${3:-1024}
runs=${RUNS:-3}

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p image-store --example load
bin=$PWD/target/release/examples/load
scratch=$(mktemp -d "${TMPDIR:-/var/tmp}/store-bench.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

best() { # best wall time in seconds over $runs runs of "$@", caches dropped before each, $reset run before each
  local best=999999 t0 t1 t
  for _ in $(seq "$runs"); do
    eval "$reset"
    drop_caches
    t0=$(date +%s.%N); "$@" > /dev/null 2>&1; t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc -l)
    if (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  echo "$best"
}

# --- a docker-save archive of $layers layers of $layer_mib MiB (incompressible) + busybox
build=$scratch/build
mkdir -p "$build"
diff_ids=()
layer_paths=()
for i in $(seq "$layers"); do
  root=$build/root$i
  mkdir -p "$root/data" "$root/bin"
  if [ "$i" = 1 ]; then cp /bin/busybox "$root/bin/"; fi
  head -c $((layer_mib * 1024 * 1024)) /dev/urandom > "$root/data/blob$i"
  mkdir -p "$build/layer$i"
  tar -C "$root" -cf "$build/layer$i/layer.tar" .
  rm -rf "$root"
  diff_ids+=("\"sha256:$(sha256sum "$build/layer$i/layer.tar" | cut -d' ' -f1)\"")
  layer_paths+=("\"layer$i/layer.tar\"")
done
(IFS=,; printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "${diff_ids[*]}") > "$build/config.json"
cfg=$(sha256sum "$build/config.json" | cut -d' ' -f1)
mv "$build/config.json" "$build/$cfg.json"
(IFS=,; printf '[{"Config":"%s.json","RepoTags":["docker.io/library/bench:1"],"Layers":[%s]}]' "$cfg" "${layer_paths[*]}") > "$build/manifest.json"
archive=$scratch/bench.tar
(cd "$build" && tar -cf "$archive" "$cfg.json" layer*/layer.tar manifest.json)
rm -rf "$build"
archive_mib=$(( $(stat -c %s "$archive") / 1024 / 1024 ))

ours_store=$scratch/ours
skopeo_store=$scratch/skopeo
reset="rm -rf '$ours_store' '$skopeo_store'"
"$bin" load "$archive" "$ours_store" > /dev/null 2>&1
skopeo copy -q "docker-archive:$archive" "oci:$skopeo_store:bench" > /dev/null
ours_cfg=$(ls "$ours_store/blobs/sha256" | grep -c "$cfg" || true)
theirs_cfg=$(ls "$skopeo_store/blobs/sha256" | grep -c "$cfg" || true)
[ "$ours_cfg" = 1 ] && [ "$theirs_cfg" = 1 ] || { echo "config $cfg missing from a store" >&2; exit 1; }

ours=$(best "$bin" load "$archive" "$ours_store")
theirs=$(best skopeo copy -q "docker-archive:$archive" "oci:$skopeo_store:bench")
printf 'load of a %d MiB docker-save archive (%d layers, page cache dropped, best of %d)\n' "$archive_mib" "$layers" "$runs"
printf '  image-store load                   %7.3f s  %5d MiB/s\n' "$ours" "$(echo "$archive_mib / $ours" | bc)"
printf '  skopeo copy docker-archive: oci:   %7.3f s  %5d MiB/s\n' "$theirs" "$(echo "$archive_mib / $theirs" | bc)"
printf '  ratio (skopeo time / ours): %.2f (goal >= 1.5)\n' "$(echo "$theirs / $ours" | bc -l)"
rm -f "$archive"

# --- 1 GiB ingest
file=$scratch/blob
head -c $((ingest_mib * 1024 * 1024)) /dev/urandom > "$file"
reset="rm -rf '$ours_store' '$scratch/copy'"
two_pass() { cp "$file" "$scratch/copy" && sync && openssl dgst -sha256 "$scratch/copy"; }
ours_digest=$("$bin" ingest "$file" "$ours_store" 2>/dev/null)
theirs_digest="sha256:$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)"
[ "$ours_digest" = "$theirs_digest" ] || { echo "digest mismatch: $ours_digest vs $theirs_digest" >&2; exit 1; }
ours=$(best "$bin" ingest "$file" "$ours_store")
theirs=$(best two_pass)
printf 'ingest of %d MiB (page cache dropped, best of %d)\n' "$ingest_mib" "$runs"
printf '  image-store ingest (one pass, fsync)                   %7.3f s  %5d MiB/s\n' "$ours" "$(echo "$ingest_mib / $ours" | bc)"
printf '  cp + sync + openssl dgst (two passes)                  %7.3f s  %5d MiB/s\n' "$theirs" "$(echo "$ingest_mib / $theirs" | bc)"
printf '  ratio (two-pass time / ours): %.2f (goal >= 1.3)\n' "$(echo "$theirs / $ours" | bc -l)"
