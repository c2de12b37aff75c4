#!/usr/bin/env bash
# Makes sure a headless-capable Chromium (Debian's `chromium` package) is installed, as
# the UI's browser test needs it, and prints the path of its binary on stdout. Installs
# it with apt-get (as root) when missing; runs `apt-get update` only if the install fails
# without it. Exits non-zero saying why when it cannot.
#
# Headless use (as root too): chromium --headless --no-sandbox --disable-gpu --no-first-run
#   --disable-background-networking --disable-component-update --disable-sync
#   --user-data-dir=<new empty dir> --dump-dom URL   (or --screenshot=F.png --window-size=1400,900)
set -euo pipefail

find_chromium() {
  local c
  for c in "${CHROMIUM:-}" chromium chromium-browser; do
    [[ -n "$c" ]] || continue
    if command -v "$c" >/dev/null 2>&1; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

if path="$(find_chromium)"; then
  echo "$path"
  exit 0
fi

echo "ensure-chromium: chromium is not installed; installing Debian's chromium package" >&2
if [[ "$(id -u)" -ne 0 ]]; then
  echo "ensure-chromium: not root: run 'apt-get install -y chromium' as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get on this machine: install Chromium and put it on PATH (or set CHROMIUM)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >&2; then
  echo "ensure-chromium: install failed; apt-get update, then again" >&2
  apt-get update -q >&2 || { echo "ensure-chromium: apt-get update failed" >&2; exit 1; }
  apt-get install -y -q chromium >&2 || { echo "ensure-chromium: apt-get install -y chromium failed" >&2; exit 1; }
fi

if ! path="$(find_chromium)"; then
  echo "ensure-chromium: the chromium package is installed but no chromium binary is on PATH" >&2
  exit 1
fi
echo "ensure-chromium: Chromium installed" >&2
echo "$path"
