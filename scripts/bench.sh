#!/usr/bin/env bash
# Runs raftpoll's benchmarks on a release build and prints their tables (see BENCHMARKS.md).
# Installs what they need first (the test bed's packages plus collectd and snmp_exporter).
#
#   scripts/bench.sh                          # all eight, about two hours
#   scripts/bench.sh peers|rrd|bulk-add|scale|cluster|scaling|writeback [flags]   # one of raftpoll-bench's benchmarks
#   scripts/bench.sh failover [flags]         # 20 SIGKILLs in a 5-node cluster (needs root)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --bench
cargo build --release --workspace --bins
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"

failover() {
    "$BIN/raftpoll-chaos" --nodes 5 --faults kill --at-once 1 --rounds 20 --devices 50 "$@"
}

if [ $# -gt 0 ]; then
    what=$1
    shift
    case $what in
        failover) failover "$@" ;;
        *) "$BIN/raftpoll-bench" "$what" "$@" ;;
    esac
    exit
fi
"$BIN/raftpoll-bench" peers
"$BIN/raftpoll-bench" rrd
"$BIN/raftpoll-bench" bulk-add
failover
"$BIN/raftpoll-bench" scale
"$BIN/raftpoll-bench" cluster
"$BIN/raftpoll-bench" scaling
"$BIN/raftpoll-bench" writeback
