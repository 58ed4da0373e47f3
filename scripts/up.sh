#!/usr/bin/env bash
# Runs the platform on embedded defaults, all on loopback:
#   Dagster UI + daemon  http://127.0.0.1:3000   (DAGSTER_HOME=dagster_home)
#   Pushgateway          http://127.0.0.1:9091
#   Prometheus           http://127.0.0.1:9090
#   Bento service        http://127.0.0.1:3001   (once `deployed_model` has been materialized)
# Stops everything it started on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -f .env ]; then
  set -a
  # shellcheck disable=SC1091
  source .env
  set +a
fi
export DAGSTER_HOME="${DAGSTER_HOME:-$root/dagster_home}"
# The daemon and the webserver start together below: the instance they share must exist before either does.
./scripts/init_dagster_home.sh
export TAXI_PUSHGATEWAY_URL="${TAXI_PUSHGATEWAY_URL-http://127.0.0.1:9091}"
mkdir -p data/logs

children=()
cleanup() {
  for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start() {
  local name=$1
  shift
  echo "up: starting $name (log: data/logs/$name.log)"
  "$@" >"data/logs/$name.log" 2>&1 &
  children+=($!)
}

if command -v prometheus-pushgateway >/dev/null; then
  # Debian's build persists to a machine-wide file by default; this platform's series live under data/.
  start pushgateway prometheus-pushgateway --web.listen-address=127.0.0.1:9091 \
    --persistence.file=data/pushgateway.data
fi
if command -v prometheus >/dev/null; then
  start prometheus prometheus --config.file=monitoring/prometheus/prometheus.yml \
    --storage.tsdb.path=data/prometheus --web.listen-address=127.0.0.1:9090
fi

export BENTOML_HOME="${BENTOML_HOME:-$root/data/bentoml}"
# The service serves the deployed model: on a fresh machine it waits until Dagster has deployed one.
start bento bash -c 'until .venv/bin/bentoml models get taxi_duration_deployed:latest >/dev/null 2>&1; do
    echo "waiting for a deployed model: materialize deployed_model in the Dagster UI"; sleep 10; done
  exec .venv/bin/bentoml serve bento_service.service:TaxiDuration'

# The daemon runs the run queue, sensors, automation and backfills; the webserver is the UI. Both load
# workspace.yaml, as compose does.
start dagster-daemon .venv/bin/dagster-daemon run -w workspace.yaml
echo "up: Dagster UI on http://127.0.0.1:${DAGSTER_PORT:-3000} (Ctrl-C stops everything)"
.venv/bin/dagster-webserver -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}" -w workspace.yaml
