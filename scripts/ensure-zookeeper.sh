#!/usr/bin/env bash
# Makes sure Apache ZooKeeper (Debian's `zookeeper` package) and java are installed, as
# Squall's dev-zookeeper and its tests need them. Exits 0 when they are; otherwise
# installs them with apt-get (as root), or exits non-zero saying why it cannot.
set -euo pipefail

jar=/usr/share/java/zookeeper.jar

installed() { [[ -f "$jar" ]] && command -v java >/dev/null 2>&1; }

if installed; then
  exit 0
fi

echo "ensure-zookeeper: Apache ZooKeeper is not installed ($jar or java missing); installing it" >&2
if [[ "$(id -u)" -ne 0 ]]; then
  echo "ensure-zookeeper: not root: run 'apt-get install -y zookeeper' as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-zookeeper: no apt-get on this machine: install Apache ZooKeeper 3.8 so that $jar exists" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# (Captured first: with pipefail, `grep -q` closing the pipe early would fail the test.)
policy="$(apt-cache policy zookeeper 2>/dev/null || true)"
if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
  echo "ensure-zookeeper: no zookeeper package known yet: apt-get update" >&2
  apt-get update -q >&2 || { echo "ensure-zookeeper: apt-get update failed" >&2; exit 1; }
fi
echo "ensure-zookeeper: apt-get install -y zookeeper" >&2
apt-get install -y -q zookeeper >&2 || { echo "ensure-zookeeper: apt-get install -y zookeeper failed" >&2; exit 1; }

if ! installed; then
  echo "ensure-zookeeper: the zookeeper package is installed but $jar or java is still missing" >&2
  exit 1
fi
echo "ensure-zookeeper: Apache ZooKeeper installed" >&2
