#!/usr/bin/env bash
# The main job on an embedded default: make an image from Debian's
# busybox-static into a local store, unpack it, and run it.
# Usage: scripts/demo.sh [STORE_DIR]   (as root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
cargo build --release -q -p imagectl
imagectl=$PWD/target/release/imagectl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export IMAGECTL_STORE=${1:-$work/store}
# Containers and snapshots live beside the store.

# A root filesystem: busybox-static and the applets the demo uses.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,dev,sys}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo cat ls id hostname uname env pwd; do
  ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
echo "hello from an image made by imagectl" > "$rootfs/etc/motd"

echo "== imagectl append: pack the root filesystem as a layer, write config and manifest, tag"
"$imagectl" append --rootfs "$rootfs" --tag demo/busybox:latest \
  --env GREETING=hello --workdir /root \
  --cmd /bin/sh -c 'cat /etc/motd; echo "$GREETING from pid $$ as $(id -u) in $(pwd) on $(uname -s)"'
"$imagectl" images
"$imagectl" inspect --history demo/busybox

echo "== imagectl unpack: flatten the image's layers, verifying digests and diff IDs"
"$imagectl" unpack demo/busybox "$work/unpacked"

echo "== imagectl run: a container from the image (overlay snapshots, native executor)"
"$imagectl" run --rm --hostname demo demo/busybox
echo "== and with a command of our own, under runc, with a memory limit"
"$imagectl" run --rm --runtime runc --memory 64m demo/busybox /bin/sh -c 'echo "hostname $(hostname), pid $$, $(ls / | wc -w) entries in /"'

echo "== imagectl fsck"
"$imagectl" fsck
