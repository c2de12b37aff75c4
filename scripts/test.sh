#!/usr/bin/env bash
# Runs Squall's whole test suite: unit, property, doc and black-box tests.
# Anything else the tests need is set up by the tests themselves; the real ZooKeeper
# they start is installed here first, Prometheus's promtool (for the /metrics tests,
# found through SQUALL_PROMTOOL) and redis-server (for Trident's Redis state, found
# through SQUALL_REDIS_SERVER).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-zookeeper.sh
SQUALL_PROMTOOL="$(./scripts/ensure-promtool.sh)"
export SQUALL_PROMTOOL
SQUALL_REDIS_SERVER="$(./scripts/ensure-redis.sh)"
export SQUALL_REDIS_SERVER
exec cargo test -j2 --workspace "$@"
