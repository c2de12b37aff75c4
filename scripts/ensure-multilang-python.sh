#!/usr/bin/env bash
# Makes sure a Python with pystorm/streamparse (PyPI) is available for the multilang
# tests (ShellBolt/ShellSpout running Python components unchanged). Prints the path of
# that Python on stdout. Idempotent: a second run only prints the path.
#
# Virtual env: ${SQUALL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/squall-tools}/multilang.
set -euo pipefail

streamparse=5.0.1
venv="${SQUALL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/squall-tools}/multilang"
py="$venv/bin/python"

if [[ -x "$py" ]] && [[ "$("$py" -c 'import importlib.metadata as m, pystorm; print(m.version("streamparse"))' 2>/dev/null)" == "$streamparse" ]]; then
  echo "$py"
  exit 0
fi

echo "ensure-multilang-python: installing streamparse $streamparse (and pystorm) into $venv" >&2
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" >&2 || { echo "ensure-multilang-python: python3 -m venv failed (is python3-venv installed? scripts/ensure-build-deps.sh installs it)" >&2; exit 1; }
"$venv/bin/pip" install -q --disable-pip-version-check "streamparse==$streamparse" >&2 || { echo "ensure-multilang-python: pip install streamparse==$streamparse failed" >&2; exit 1; }
"$py" -c 'import pystorm, streamparse' || { echo "ensure-multilang-python: pystorm/streamparse do not import" >&2; exit 1; }
echo "$py"
