#!/usr/bin/env bash
# The main job: sets up .venv, migrates the database, then runs the arena.
# Extra arguments go to `arena` (e.g. scripts/run.sh leaderboard).
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
bootstrap_install ""
"$VENV_PY" -m app db upgrade
if [ "$#" -gt 0 ]; then
  exec "$VENV_PY" -m app "$@"
fi
exec "$VENV_PY" -m app --help
