#!/usr/bin/env bash
# Runs natgw's whole test suite: formatting, lints, unit, property,
# scenario, CLI and network-namespace end-to-end tests, and checks that the
# benchmarks build. Installs what it needs first (scripts/setup.sh).
# Everything builds in the release profile, once.
#
# As root (or under CI, or with NATGW_E2E=1) the end-to-end tests must run:
# one that cannot build its hosts fails. Without root they are skipped,
# each with a SKIPPED line, and the run ends with a warning that says so.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ "$(id -u)" -eq 0 ]; then
    export NATGW_E2E=${NATGW_E2E:-1}
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --release --all-targets -- -D warnings
echo "== benchmarks build"
cargo build --release --benches --quiet
echo "== tests"
cargo test --release --lib --bins --tests --examples
if [ "${NATGW_E2E:-0}" != "1" ] && [ -z "${CI:-}" ]; then
    echo "WARNING: not root: the network-namespace end-to-end tests were SKIPPED" >&2
fi
