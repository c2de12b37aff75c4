#!/usr/bin/env bash
# Runs the perf topologies in local mode and prints one JSON line per run.
# Usage: scripts/bench.sh [seconds] [runs]   (each line `runs` times, default 1; take
# the median: this shared machine's speed drifts by up to 30 %; see BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
runs="${2:-1}"
cargo build -j2 --release -p squall-examples --bin squall-perf >&2
perf=target/release/squall-perf
run() { for _ in $(seq "$runs"); do "$perf" "$@" --seconds "$secs" --warmup 2; done; }
run const-spout-null-bolt --ackers 0
run const-spout-null-bolt --ackers 1
run const-spout-null-bolt --ackers 1 --rate 1500000
run const-spout-id-bolt-null-bolt --ackers 0
run const-spout-id-bolt-null-bolt --ackers 1
run word-count --ackers 0
run word-count --ackers 0 --splitters 2
run word-count --ackers 1
run word-count --ackers 1 --splitters 2
# Issue 11's targets: no tuning needed (flow control), across workers, many executors.
run word-count --ackers 1 --no-flow-control
run word-count --workers 2 --ackers 1
run const-spout-null-bolt --workers 2 --ackers 1 --rate 600000
run word-count --ackers 1 --splitters 32 --counters 32
