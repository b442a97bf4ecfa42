#!/usr/bin/env bash
# The main job: sets up .venv, migrates the database, then starts the arena (`arena start`): the
# live daemon when a model API key is set, otherwise an offline first look with the baselines.
# Arguments run another `arena` command instead (e.g. scripts/run.sh leaderboard).
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
bootstrap_install ""
"$VENV_PY" -m app db upgrade
if [ "$#" -gt 0 ]; then
  exec "$VENV_PY" -m app "$@"
fi
exec "$VENV_PY" -m app start
