#!/usr/bin/env bash
# Makes sure `redis-server` (Debian's `redis-server` package) is installed, as the tests
# of Trident's Redis map state need a real Redis. Prints the path of the `redis-server`
# binary on stdout; installs the package with apt-get (as root) when it is missing, or
# exits non-zero saying why it cannot. Idempotent: a second run only prints the path.
#
# The tests start their own server (loopback, free port, no persistence); the package's
# own service is neither needed nor started here.
set -euo pipefail

find_server() { command -v redis-server 2>/dev/null || { [[ -x /usr/bin/redis-server ]] && echo /usr/bin/redis-server; } || true; }
works() { [[ -n "$1" ]] && "$1" --version >/dev/null 2>&1; }

server="$(find_server)"
if works "$server"; then
  echo "$server"
  exit 0
fi

echo "ensure-redis: redis-server is not installed; installing it" >&2
if [[ "$(id -u)" -ne 0 ]]; then
  echo "ensure-redis: not root: run 'apt-get install -y redis-server' as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-redis: no apt-get on this machine: install Redis so that redis-server is on PATH, or set SQUALL_REDIS_SERVER to its path" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# (Captured first: with pipefail, `grep -q` closing the pipe early would fail the test.)
policy="$(apt-cache policy redis-server 2>/dev/null || true)"
if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
  echo "ensure-redis: no redis-server package known yet: apt-get update" >&2
  apt-get update -q >&2 || { echo "ensure-redis: apt-get update failed" >&2; exit 1; }
fi
echo "ensure-redis: apt-get install -y redis-server" >&2
# policy-rc.d-less containers may try to start the service: that is harmless here, the
# tests start their own servers on free ports.
apt-get install -y -q --no-install-recommends redis-server >&2 || { echo "ensure-redis: apt-get install -y redis-server failed" >&2; exit 1; }

server="$(find_server)"
if ! works "$server"; then
  echo "ensure-redis: the redis-server package is installed but redis-server does not run" >&2
  exit 1
fi
echo "ensure-redis: redis-server installed" >&2
echo "$server"
