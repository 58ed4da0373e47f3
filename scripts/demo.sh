#!/usr/bin/env bash
# `make demo`: the whole loop in one command, on embedded defaults. Starts the platform when it is not running
# (with the local TLC mirror ../shared/data/tlc as the trip-data source when there is one and nothing else is
# configured), then runs taxi_assets/demo.py against it and prints the wall time. `make down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

mirror=$(cd .. && pwd)/shared/data/tlc
if [ -z "${TAXI_TRIP_DATA_URL:-}" ] && ! grep -qE '^TAXI_TRIP_DATA_URL=' .env 2>/dev/null && \
    [ -f "$mirror/green_tripdata_2021-01.parquet" ]; then
  echo "demo: trip data from the local mirror $mirror"
  export TAXI_TRIP_DATA_URL=$mirror
fi
# The monthly chain follows a deployment within seconds rather than the default half minute; the retraining loop
# challenges the deployed model and waits for approval instead of redeploying in the middle of the demo.
export TAXI_AUTOMATION_CHECK_SECONDS="${TAXI_AUTOMATION_CHECK_SECONDS:-10}"
export TAXI_PROMOTION="${TAXI_PROMOTION:-manual}"

eval "$(.venv/bin/python -m taxi_assets.settings --shell)"
if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$DAGSTER_PORT/server_info', timeout=2)" 2>/dev/null; then
  echo "demo: the platform is already running (make up); using it as it is configured"
else
  ./scripts/up.sh
fi
.venv/bin/python -m taxi_assets.demo "$@"
echo "demo: wall time $(( $(date +%s) - started )) s (set-up excluded)"
