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
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test.log
# A suite that printed no result line ran nothing: fail loudly.
grep -q '^test result: ' target/test.log
