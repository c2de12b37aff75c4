#!/usr/bin/env bash
# Runs Squall's whole test suite: unit, property, doc and black-box tests.
# Anything else the tests need is set up by the tests themselves; the real ZooKeeper
# they start is installed here first, and Prometheus's promtool (for the /metrics
# tests, found through SQUALL_PROMTOOL).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-zookeeper.sh
SQUALL_PROMTOOL="$(./scripts/ensure-promtool.sh)"
export SQUALL_PROMTOOL
exec cargo test -j2 --workspace "$@"
