#!/usr/bin/env bash
# The test command: sets up .venv with the dev tools, then runs ruff, mypy, the import contracts
# and pytest. pytest runs every test, the slow end-to-end ones too, on one worker process per CPU
# (pytest-xdist); each test file stays on one worker, so module-wide fixtures are built once.
# Extra arguments go to pytest (e.g. scripts/test.sh -k paper -x; -m "not slow" leaves out the
# tests that start real processes; -n 0 runs in a single process, e.g. to use a debugger).
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
# The `cluster` extra (Ray) too: the executor tests run windows on a local Ray; and `postgres`
# (psycopg): the database tests run on SQLite and on the PostgreSQL at TEST_POSTGRES_URL.
bootstrap_install dev,cluster,postgres
echo "==> ruff check" >&2
"$VENV_PY" -m ruff check app tests scripts benchmarks migrations
echo "==> mypy app" >&2
"$VENV_PY" -m mypy app
echo "==> lint-imports (the layers in pyproject.toml; docs/architecture.md)" >&2
"$ROOT/.venv/bin/lint-imports" --no-cache
echo "==> pytest" >&2
# pytest exits 5 when no test ran: that fails this script too (set -e).
"$VENV_PY" -m pytest -q -n auto --dist loadfile --no-loadscope-reorder "$@"
