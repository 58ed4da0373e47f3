#!/usr/bin/env bash
# Creates, or migrates, the Dagster instance in $DAGSTER_HOME (default: dagster_home) before any Dagster process
# uses it. Two processes creating a fresh SQLite instance at once (the daemon and the webserver of `make up`, two
# `dagster asset materialize` in two terminals) can stamp two alembic heads, or a stale one, after which every
# command fails until the folder is deleted. Idempotent and quick: it migrates only when the instance is new or the
# installed Dagster changed since the last migration (a new Dagster may bring a schema migration).
set -euo pipefail
cd "$(dirname "$0")/.."

home=$(realpath -m "${DAGSTER_HOME:-dagster_home}")
mkdir -p "$home"
# A home of one's own (DAGSTER_HOME in .env) gets the project's instance settings: the DuckDB pool above all.
[ -f "$home/dagster.yaml" ] || cp dagster_home/dagster.yaml "$home/dagster.yaml"

version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("dagster"))')
stamp="$home/.migrated-dagster-$version"
# (An instance whose storage is not SQLite in this folder has no runs.db: it is migrated every time.)
if [ ! -f "$stamp" ] || [ ! -f "$home/history/runs.db" ]; then
  if ! output=$(DAGSTER_HOME="$home" .venv/bin/dagster instance migrate 2>&1); then
    echo "$output" >&2
    echo "init_dagster_home: dagster instance migrate failed for $home" >&2
    exit 1
  fi
  # The DuckDB pool's slots, before any run can claim one: created lazily, by two first runs at once, a limit of
  # one became two slots (taxi_assets.execution.initialize_pools).
  if ! output=$(DAGSTER_HOME="$home" .venv/bin/python -m taxi_assets.execution initialize-pools 2>&1); then
    echo "$output" >&2
    echo "init_dagster_home: the DuckDB pool could not be created in $home" >&2
    exit 1
  fi
  rm -f "$home"/.migrated-dagster-*
  touch "$stamp"
  echo "init_dagster_home: Dagster instance in $home is ready (dagster $version)"
fi
