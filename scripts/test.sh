#!/usr/bin/env bash
# Runs Squall's whole test suite: unit, property, doc and black-box tests.
# Anything else the tests need is set up by the tests themselves; the real ZooKeeper
# they start is installed here first, Prometheus's promtool (for the /metrics tests,
# found through SQUALL_PROMTOOL), redis-server (for Redis state, found through
# SQUALL_REDIS_SERVER), a Kafka-protocol broker (noida-db, found through SQUALL_NOIDA;
# set SQUALL_KAFKA_BOOTSTRAP=host:port to test against a real Kafka instead) and a
# Python with pystorm/streamparse (for multilang, found through SQUALL_PYTHON). The
# build needs cmake (rdkafka's bundled librdkafka): scripts/ensure-build-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-build-deps.sh
./scripts/ensure-zookeeper.sh
SQUALL_PROMTOOL="$(./scripts/ensure-promtool.sh)"
export SQUALL_PROMTOOL
SQUALL_REDIS_SERVER="$(./scripts/ensure-redis.sh)"
export SQUALL_REDIS_SERVER
SQUALL_NOIDA="$(./scripts/ensure-kafka-broker.sh)"
export SQUALL_NOIDA
SQUALL_PYTHON="$(./scripts/ensure-multilang-python.sh)"
export SQUALL_PYTHON
exec cargo test -j2 --workspace "$@"
