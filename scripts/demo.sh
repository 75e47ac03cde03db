#!/usr/bin/env bash
# The main job, with no network: make a base image from Debian's
# busybox-static with the builder API, build the example project
# (examples/project: a two-stage Dockerfile) on it, run the result, build
# it again (every step CACHED, the same image) and show its history.
# Usage: scripts/demo.sh [STORE_DIR]   (as root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says what it does; the first that fails stops the demo and
# says which it was.
step() { # step "what it does" command...
  local what=$1
  shift
  echo "== $what"
  "$@" || fail "$what" "exit status $?"
}
fail() { # fail "step" "why"
  echo "demo.sh: FAILED: $1: $2" >&2
  exit 1
}

step "install the peer tools (apt-get, only what is missing)" \
  sh -c 'scripts/install-deps.sh >/dev/null'
[ -f image-build/examples/busybox_image.rs ] ||
  fail "the base image" "image-build/examples/busybox_image.rs (the builder API's example) is missing"
step "build imagectl and the builder API's busybox_image example (release)" \
  cargo build --release -q -p imagectl -p image-build --bin imagectl --example busybox_image
imagectl=$PWD/target/release/imagectl
busybox_image=$PWD/target/release/examples/busybox_image
"$imagectl" build --help >/dev/null 2>&1 ||
  fail "imagectl build" "this imagectl has no build command"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export IMAGECTL_STORE=${1:-$work/store}
# Containers, snapshots and the build's state live beside the store.

step "the base image: busybox-static as demo/busybox:latest, made by the builder API" \
  "$busybox_image" "$IMAGECTL_STORE" demo/busybox:latest
"$imagectl" images

step "imagectl build: examples/project (a build stage makes a report, the final stage prints it)" \
  "$imagectl" build --progress plain --iidfile "$work/iid1" -t demo/app examples/project

step "imagectl run: the built image, as the user and with the command it sets" \
  "$imagectl" run --rm demo/app
step "and with a command of our own, under runc: the image's USER and WORKDIR hold" \
  "$imagectl" run --rm --runtime runc demo/app /bin/sh -c 'echo "$(id -un) in $(pwd): $(wc -l < "$REPORT") report lines"'

echo "== imagectl build again: nothing changed, every step CACHED, the same image"
"$imagectl" build --progress plain --iidfile "$work/iid2" -t demo/app examples/project \
  2>&1 | tee "$work/rebuild.log" ||
  fail "the second build" "exit status ${PIPESTATUS[0]}"
cmp -s "$work/iid1" "$work/iid2" ||
  fail "the second build" "another image ($(cat "$work/iid1") then $(cat "$work/iid2"))"
grep -q CACHED "$work/rebuild.log" ||
  fail "the second build" "no step reported CACHED"

step "imagectl history: one line per instruction, as docker history" \
  "$imagectl" history demo/app
step "imagectl images (the build cache's records are not listed)" \
  "$imagectl" images
step "imagectl fsck: every blob re-hashed, every image complete" \
  "$imagectl" fsck
echo "== done: demo/app is $(cat "$work/iid1")"
