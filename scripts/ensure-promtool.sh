#!/usr/bin/env bash
# Makes sure `promtool` (from Debian's `prometheus` package) is available for the tests
# of `/metrics`, without installing Prometheus itself: the package is downloaded with
# `apt-get download` and unpacked with `dpkg -x` into a cache directory. Prints the path
# of promtool on stdout; idempotent (a second run only prints the path).
#
# Cache: $SQUALL_PROMTOOL_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/squall/promtool.
set -euo pipefail

cache="${SQUALL_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/squall/promtool}"
tool="$cache/root/usr/bin/promtool"

works() { [[ -x "$tool" ]] && "$tool" --version >/dev/null 2>&1; }

if works; then
  echo "$tool"
  exit 0
fi

for cmd in apt-get dpkg; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "ensure-promtool: no $cmd on this machine: install Prometheus's promtool and set SQUALL_PROMTOOL to its path" >&2
    exit 1
  fi
done

mkdir -p "$cache"
work="$(mktemp -d "$cache/download.XXXXXX")"
trap 'rm -rf "$work"' EXIT

download() { (cd "$work" && apt-get download -q prometheus >&2); }

echo "ensure-promtool: apt-get download prometheus (into $cache)" >&2
if ! download; then
  # The package lists may be missing (a fresh container): refresh them when we may.
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "ensure-promtool: apt-get download prometheus failed; as root, run 'apt-get update' first" >&2
    exit 1
  fi
  echo "ensure-promtool: apt-get update" >&2
  apt-get update -q >&2 || { echo "ensure-promtool: apt-get update failed" >&2; exit 1; }
  download || { echo "ensure-promtool: apt-get download prometheus failed" >&2; exit 1; }
fi

deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)"
if [[ -z "$deb" ]]; then
  echo "ensure-promtool: apt-get download left no prometheus_*.deb" >&2
  exit 1
fi
# Unpack beside the final place, then move it in one step (concurrent runs stay safe).
dpkg -x "$deb" "$work/root"
if [[ ! -x "$work/root/usr/bin/promtool" ]]; then
  echo "ensure-promtool: $(basename "$deb") holds no usr/bin/promtool" >&2
  exit 1
fi
rm -rf "$cache/root"
mv -T "$work/root" "$cache/root"

if ! works; then
  echo "ensure-promtool: $tool does not run" >&2
  exit 1
fi
echo "ensure-promtool: promtool ready" >&2
echo "$tool"
