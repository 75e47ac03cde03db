#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this):
# installs the peer tools, then formatting, lints, and every test of the
# workspace, which run against the real tools, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The workspace build unifies features; a user who `cargo add`s one crate
# gets it alone, with its default features, or image-build without the
# runtime: lint each of those configurations too.
for c in image-core image-store image-overlay image-runtime image-registry image-build; do
  cargo clippy -p "$c" --lib --locked -- -D warnings
done
cargo clippy -p image-build --no-default-features --lib --locked -- -D warnings
# The API docs as a user reads them (docs.rs builds one crate with its
# default features): no broken or private link, alone and with `tokio`.
echo "== cargo doc"
for c in image-core image-store image-overlay image-runtime image-registry image-build; do
  RUSTDOCFLAGS="-D warnings" cargo doc -p "$c" --no-deps --locked
done
for c in image-core image-store image-overlay image-runtime image-build; do
  RUSTDOCFLAGS="-D warnings" cargo doc -p "$c" --no-deps --locked --features tokio
done
RUSTDOCFLAGS="-D warnings" cargo doc -p image-build --no-deps --no-default-features --locked
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test.log
# A suite that printed no result line ran nothing: fail loudly.
grep -q '^test result: ' target/test.log
