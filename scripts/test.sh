#!/usr/bin/env bash
# The whole test suite: dependencies, formatting, lints, then every test (unit tests and the
# end-to-end tests that start real snmpd, snmpsimd, rrdcached and raftpoll nodes on loopback).
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test --all-targets"
cargo test --all-targets
