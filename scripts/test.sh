#!/usr/bin/env bash
# The whole test suite: dependencies, formatting, lints, then every test of every crate of the
# workspace (unit tests and the end-to-end tests that start real snmpd, snmpsimd, rrdcached,
# raftpoll-sim and raftpoll nodes on loopback, and the short chaos run).
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# Every crate's tests; the end-to-end ones start the workspace's binaries, which this builds.
echo "== cargo test --workspace --all-targets"
cargo test --workspace --all-targets
