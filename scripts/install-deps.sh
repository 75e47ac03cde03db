#!/usr/bin/env bash
# Installs what the test suite and the demo need on a fresh Debian machine:
# the real peer tools the tests run against. Needs root (apt-get).
set -euo pipefail
packages=(
  skopeo umoci oci-image-tool podman uidmap   # image peers
  runc crun                                   # OCI runtimes
  docker-registry                             # the CNCF distribution server
  busybox-static                              # tiny root filesystems
  tar gzip pigz zstd bc                       # layer peers and bench tools
  strace                                      # syscall counts in the ingest and unpack tests
  libarchive-tools buildah                    # more layer producers (bsdtar, buildah commit)
  curl                                        # an HTTPS client for the registry fixtures' tests
  chromium                                    # headless check of imagectl analyze --html
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution server is started by the tests themselves on 127.0.0.1;
# the Debian package also enables a system service, which the tests do not use.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
echo "install-deps: all present"
