#!/usr/bin/env bash
# Everything a run needs on a fresh Debian/Ubuntu machine: Prometheus, the Pushgateway, Alertmanager, Chromium and PostgreSQL from
# the distribution, and the project in a virtualenv. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v prometheus >/dev/null || packages+=(prometheus)
command -v promtool >/dev/null || packages+=(prometheus)
command -v prometheus-pushgateway >/dev/null || packages+=(prometheus-pushgateway)
# Alert routing, grouping, silences and inhibition; amtool checks its config and routes in the suite.
command -v prometheus-alertmanager >/dev/null || packages+=(prometheus-alertmanager)
command -v amtool >/dev/null || packages+=(prometheus-alertmanager)
command -v chromium >/dev/null || packages+=(chromium)  # the UI tests render Dagster's pages headless
command -v wrk >/dev/null || packages+=(wrk)  # bench/bench_service.py loads the service with it
# The compose instance keeps Dagster's storage in PostgreSQL; a test runs a throwaway cluster of its own with the
# server binaries (initdb, postgres) under /usr/lib/postgresql/<version>/bin.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing the project and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch .venv/.installed
fi

# The Dagster instance exists before anything can start two Dagster processes on it at once.
./scripts/init_dagster_home.sh
