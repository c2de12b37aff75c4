#!/usr/bin/env bash
# Makes sure what the build itself needs beyond Rust is installed: `cmake` and zlib's
# headers (and curl's, see below), with which the `rdkafka` crate builds its bundled librdkafka (Squall's Kafka
# connector; Debian's own librdkafka is too old). Installs the Debian packages with
# apt-get (as root) when missing, or exits non-zero saying why it cannot. Idempotent and
# quiet when everything is there. Called by .ci/run and scripts/test.sh before cargo.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[[ -f /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
# librdkafka 2.12's rdkafka_conf.c includes <curl/curl.h> even when built without curl
# (`#ifdef` on a macro its cmake config always defines); only the header is needed.
compgen -G '/usr/include/*curl/curl.h' >/dev/null || compgen -G '/usr/include/*/curl/curl.h' >/dev/null || missing+=(libcurl4-openssl-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
((${#missing[@]} == 0)) && exit 0

echo "ensure-build-deps: missing ${missing[*]}; installing" >&2
if [[ "$(id -u)" -ne 0 ]]; then
  echo "ensure-build-deps: not root: run 'apt-get install -y ${missing[*]}' as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-build-deps: no apt-get on this machine: install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
if ! install; then
  echo "ensure-build-deps: apt-get update" >&2
  apt-get update -q >&2 || { echo "ensure-build-deps: apt-get update failed" >&2; exit 1; }
  install || { echo "ensure-build-deps: apt-get install -y ${missing[*]} failed" >&2; exit 1; }
fi
echo "ensure-build-deps: installed ${missing[*]}" >&2
