#!/usr/bin/env bash
# The test command: sets up .venv with the dev tools, then runs ruff, mypy, the import contracts
# and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k paper -x).
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
bootstrap_install dev
echo "==> ruff check" >&2
"$VENV_PY" -m ruff check app tests scripts benchmarks migrations
echo "==> mypy app" >&2
"$VENV_PY" -m mypy app
echo "==> lint-imports (the layers in pyproject.toml; docs/architecture.md)" >&2
"$ROOT/.venv/bin/lint-imports" --no-cache
echo "==> pytest" >&2
# pytest exits 5 when no test ran: that fails this script too (set -e).
"$VENV_PY" -m pytest "$@"
