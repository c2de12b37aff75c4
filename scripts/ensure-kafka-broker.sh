#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker is available for the Kafka connector's tests:
# `noida-db` (PyPI; one prebuilt binary), installed into a Python virtual env. Prints the
# path of the `noida-db` binary itself on stdout (not the venv's Python wrapper, which runs
# it as a child: stopping the wrapper would leave the broker running). Idempotent: a second
# run only prints the path.
# No Apache Kafka package is installable on these machines; to test against a real Kafka
# instead, set SQUALL_KAFKA_BOOTSTRAP=host:port (the tests then start no broker).
#
# Virtual env: ${SQUALL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/squall-tools}/noida.
set -euo pipefail

version=0.2.3
venv="${SQUALL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/squall-tools}/noida"
bin="$venv/bin/noida-db"

# The prebuilt binary inside the installed package.
real_binary() {
  local real
  real="$("$venv/bin/python" -c 'from importlib.resources import files; print(files("noida_db").joinpath("noida-db"))' 2>/dev/null)" || return 1
  [[ -f "$real" ]] || return 1
  [[ -x "$real" ]] || chmod +x "$real"
  echo "$real"
}

if [[ -x "$bin" ]] && [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("noida-db"))' 2>/dev/null)" == "$version" ]] && real_binary; then
  exit 0
fi

echo "ensure-kafka-broker: installing noida-db $version into $venv" >&2
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" >&2 || { echo "ensure-kafka-broker: python3 -m venv failed (is python3-venv installed? scripts/ensure-build-deps.sh installs it)" >&2; exit 1; }
"$venv/bin/pip" install -q --disable-pip-version-check "noida-db==$version" >&2 || { echo "ensure-kafka-broker: pip install noida-db==$version failed" >&2; exit 1; }
real_binary || { echo "ensure-kafka-broker: noida-db installed but its binary is missing from the package in $venv" >&2; exit 1; }
