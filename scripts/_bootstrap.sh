# Shared setup for scripts/run.sh and scripts/test.sh: a virtualenv in .venv with the project
# installed (editable), reinstalled only when pyproject.toml changes. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; install Python 3.11 or newer (or set PYTHON=/path/to/python3)" >&2
  exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: Python 3.11 or newer is needed; $("$PYTHON" --version 2>&1) found (set PYTHON=...)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv in .venv" >&2
  "$PYTHON" -m venv .venv
fi
VENV_PY="$ROOT/.venv/bin/python"
bootstrap_install() {
  # $1: the extras to install ("", "dev" or "dev,cluster")
  local extras="$1" spec="." stamp
  [ -n "$extras" ] && spec=".[${extras}]"
  stamp="$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)"
  if [ ! -f .venv/.install-stamp ] || ! grep -qx "$stamp" .venv/.install-stamp; then
    echo "==> installing alpha-arena${extras:+ [$extras]} into .venv (first run takes a minute)" >&2
    "$VENV_PY" -m pip install --quiet --upgrade pip >&2
    "$VENV_PY" -m pip install --quiet -e "$spec" >&2
    echo "$stamp" >> .venv/.install-stamp
  fi
}
