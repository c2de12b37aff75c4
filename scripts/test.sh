#!/usr/bin/env bash
# Runs Squall's whole test suite: unit, property, doc and black-box tests.
# Anything the tests need is set up by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test -j2 --workspace "$@"
