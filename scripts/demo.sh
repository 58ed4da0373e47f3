#!/usr/bin/env bash
# `make demo`: the whole loop in one command, on embedded defaults. Starts the platform when it is not running
# (with the same configuration as `make up`: the environment, then .env, then taxi_assets/settings.py), then runs
# taxi-demo (taxi_assets/cli/demo.py) against it and prints the wall time. `make down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
. scripts/env.sh

# The trip-data source is the platform's embedded default (taxi_assets/settings.py: the local mirror
# ../shared/data/tlc when it exists, else TLC's address) unless the environment or .env names one.
echo "demo: $(.venv/bin/taxi-settings --trip-data)"
# The monthly chain follows a deployment within seconds rather than the default half minute; the retraining loop
# challenges the deployed model and waits for approval instead of redeploying in the middle of the demo.
export TAXI_AUTOMATION_CHECK_SECONDS="${TAXI_AUTOMATION_CHECK_SECONDS:-10}"
export TAXI_PROMOTION="${TAXI_PROMOTION:-manual}"

eval "$(.venv/bin/taxi-settings --shell)"
if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$DAGSTER_PORT/server_info', timeout=2)" 2>/dev/null; then
  echo "demo: the platform is already running (make up); using it as it is configured"
else
  ./scripts/up.sh
fi
.venv/bin/taxi-demo "$@"
echo "demo: wall time $(( $(date +%s) - started )) s (set-up excluded)"
