#!/usr/bin/env bash
# Runs the perf topologies in local mode and prints one JSON line per run.
# Usage: scripts/bench.sh [seconds]   (see BENCHMARKS.md for recorded results)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
cargo build -j2 --release -p squall-examples --bin squall-perf >&2
perf=target/release/squall-perf
run() { "$perf" "$@" --seconds "$secs" --warmup 2; }
run const-spout-null-bolt --ackers 0
run const-spout-null-bolt --ackers 1
run const-spout-null-bolt --ackers 1 --rate 1500000
run const-spout-id-bolt-null-bolt --ackers 0
run const-spout-id-bolt-null-bolt --ackers 1
run word-count --ackers 0
run word-count --ackers 0 --splitters 2
run word-count --ackers 1
run word-count --ackers 1 --splitters 2
