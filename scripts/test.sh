#!/usr/bin/env bash
# Runs natgw's whole test suite: formatting, lints, unit, property,
# scenario, CLI and network-namespace end-to-end tests (the latter need
# root; they skip with a message otherwise), and checks that the
# benchmarks build. Installs what it needs first (scripts/setup.sh).
# Everything builds in the release profile, once.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --release --all-targets -- -D warnings
echo "== benchmarks build"
cargo build --release --benches --quiet
echo "== tests"
cargo test --release --lib --bins --tests --examples
