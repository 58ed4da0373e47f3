#!/usr/bin/env bash
# Starts the platform in the background on embedded defaults, all on loopback (ports are settings):
#   Dagster UI + daemon  http://127.0.0.1:3000   (DAGSTER_HOME=dagster_home)
#   Pushgateway          http://127.0.0.1:9091
#   Prometheus           http://127.0.0.1:9090
#   Alertmanager         http://127.0.0.1:9093   (notifications appended to data/alerts/notifications.jsonl)
#   Bento service        http://127.0.0.1:3001   (once a model is deployed)
#   Evidently UI         http://127.0.0.1:8000   (reports and dashboards of the local Evidently workspace)
# Returns once the Dagster UI answers, printing where everything is. Each process runs in a session of its own,
# its pid in $TAXI_RUN_DIR (data/run) and its log in $TAXI_LOGS_DIR (data/logs); `make down` (scripts/down.sh)
# stops them all. Ctrl-C while starting stops what was started. `--foreground` stays attached instead, and
# Ctrl-C then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
foreground=false
[ "${1:-}" = "--foreground" ] && foreground=true

. scripts/env.sh
pushgateway_url_given=${TAXI_PUSHGATEWAY_URL+given}
echo "up: $(.venv/bin/taxi-settings --trip-data)"
alertmanager_url_given=${TAXI_ALERTMANAGER_URL+given}
# Every setting (ports, folders) from taxi_assets/settings.py, the one place that names them.
eval "$(.venv/bin/taxi-settings --shell)"
export DAGSTER_HOME="${DAGSTER_HOME:-$root/dagster_home}"
export BENTOML_HOME
if [ -z "$pushgateway_url_given" ]; then
  export TAXI_PUSHGATEWAY_URL="http://127.0.0.1:$TAXI_PUSHGATEWAY_PORT"
fi
if [ -z "$alertmanager_url_given" ] && command -v prometheus-alertmanager >/dev/null; then
  export TAXI_ALERTMANAGER_URL="http://127.0.0.1:$TAXI_ALERTMANAGER_PORT"
fi
run=$TAXI_RUN_DIR
logs=$TAXI_LOGS_DIR
mkdir -p "$run" "$logs" "$DAGSTER_HOME"
# The daemon and the webserver start together below: the instance they share must exist before either does.
./scripts/init_dagster_home.sh

for pidfile in "$run"/*.pid; do
  [ -e "$pidfile" ] || continue
  if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "up: already running ($(basename "$pidfile" .pid), pid $(cat "$pidfile")): \`make down\` first" >&2
    # What the supervisor last found: every process, restarts and why.
    .venv/bin/python -m taxi_assets.supervise --status >&2 || true
    exit 1
  fi
  rm -f "$pidfile"
done
rm -f "$run"/*.cmd "$run/supervisor.json"

port_in_use() {
  .venv/bin/python -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1', $1)) == 0 else 1)"
}
for port in "$DAGSTER_PORT" "$TAXI_SERVICE_PORT" "$TAXI_PROMETHEUS_PORT" "$TAXI_PUSHGATEWAY_PORT" "$TAXI_EVIDENTLY_PORT" \
  "$TAXI_ALERTMANAGER_PORT" "$TAXI_ALERT_RECEIVER_PORT"; do
  if port_in_use "$port"; then
    echo "up: port $port is in use by another process; set its port in .env (see .env.example)" >&2
    exit 1
  fi
done

started=false
on_interrupt() {
  trap - INT TERM
  echo
  echo "up: interrupted: stopping what was started"
  ./scripts/down.sh
  exit 130
}
trap on_interrupt INT TERM

start() {
  local name=$1
  shift
  echo "up: starting $name (log: $logs/$name.log)"
  setsid "$@" >"$logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$run/$name.pid"
  # The command line, for the supervisor to start it again (taxi_assets/supervise.py).
  printf '%s\0' "$@" >"$run/$name.cmd"
}

if command -v prometheus-pushgateway >/dev/null; then
  # Debian's build persists to a machine-wide file by default; this platform's series live under the run folder.
  start pushgateway prometheus-pushgateway --web.listen-address="127.0.0.1:$TAXI_PUSHGATEWAY_PORT" \
    --persistence.file="$run/pushgateway.data"
fi
if command -v prometheus >/dev/null; then
  # The repository's config and rules, with loopback targets on the configured ports.
  mkdir -p "$run/prometheus/targets"
  cp monitoring/prometheus/prometheus.yml monitoring/prometheus/alerts.yml "$run/prometheus/"
  echo "- targets: [127.0.0.1:$TAXI_SERVICE_PORT]" >"$run/prometheus/targets/bento.yml"
  echo "- targets: [127.0.0.1:$TAXI_PUSHGATEWAY_PORT]" >"$run/prometheus/targets/pushgateway.yml"
  echo "- targets: [127.0.0.1:$TAXI_ALERTMANAGER_PORT]" >"$run/prometheus/targets/alertmanager.yml"
  start prometheus prometheus --config.file="$run/prometheus/prometheus.yml" \
    --storage.tsdb.path="$run/prometheus/data" --web.listen-address="127.0.0.1:$TAXI_PROMETHEUS_PORT"
fi

# Alertmanager (routing, grouping, silences, inhibition) with the repository's config, its silences and
# notification log under the run folder, clustering off (one instance, nothing listening beyond loopback); it posts
# to the alert receiver, which appends every notification to $TAXI_ALERT_NOTIFICATIONS.
if command -v prometheus-alertmanager >/dev/null; then
  mkdir -p "$run/alertmanager"
  sed "s#http://127.0.0.1:9095/#http://127.0.0.1:$TAXI_ALERT_RECEIVER_PORT/#" monitoring/alertmanager/alertmanager.yml \
    >"$run/alertmanager/alertmanager.yml"
  start alert-receiver .venv/bin/python -m taxi_assets.alert_receiver --port "$TAXI_ALERT_RECEIVER_PORT" \
    --file "$TAXI_ALERT_NOTIFICATIONS"
  start alertmanager prometheus-alertmanager --config.file="$run/alertmanager/alertmanager.yml" \
    --storage.path="$run/alertmanager/data" --web.listen-address="127.0.0.1:$TAXI_ALERTMANAGER_PORT" \
    --web.external-url="http://127.0.0.1:$TAXI_ALERTMANAGER_PORT" --cluster.listen-address=
fi

# The service serves the deployed model: on a fresh machine it waits until Dagster has deployed one.
# (A look at the store's folder, `name/latest` or `name/version`: cheaper than a `bentoml models get` every time.)
model_path="$BENTOML_HOME/models/${TAXI_MODEL_TAG%%:*}/${TAXI_MODEL_TAG#*:}"
start bento bash -c 'until [ -e "$1" ]; do
    echo "waiting for a deployed model ($1): materialize deployed_model in the Dagster UI"; sleep 5; done
  exec .venv/bin/bentoml serve bento_service.service:TaxiDuration --host 127.0.0.1 --port "$2"' \
  bento "$model_path" "$TAXI_SERVICE_PORT"

# Evidently's UI over the local workspace the monitoring assets write: reports and dashboards (DO_NOT_TRACK: no
# usage telemetry from a local platform).
mkdir -p "$TAXI_EVIDENTLY_WORKSPACE"
start evidently-ui env DO_NOT_TRACK=1 .venv/bin/evidently ui --workspace "$TAXI_EVIDENTLY_WORKSPACE" \
  --host 127.0.0.1 --port "$TAXI_EVIDENTLY_PORT"

# The daemon runs the run queue, sensors, automation and backfills; the webserver is the UI. Both load
# workspace.yaml, as compose does.
start dagster-daemon .venv/bin/dagster-daemon run -w workspace.yaml
start dagster-webserver .venv/bin/dagster-webserver -h 127.0.0.1 -p "$DAGSTER_PORT" -w workspace.yaml

echo "up: waiting for the Dagster UI"
for _ in $(seq 300); do
  if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$DAGSTER_PORT/server_info', timeout=1)" 2>/dev/null; then
    started=true
    break
  fi
  if ! kill -0 "$(cat "$run/dagster-webserver.pid")" 2>/dev/null; then
    echo "up: the Dagster webserver exited: see $logs/dagster-webserver.log" >&2
    ./scripts/down.sh
    exit 1
  fi
  sleep 1
done
if [ "$started" != true ]; then
  echo "up: the Dagster UI did not answer within 300 s: see $logs/dagster-webserver.log" >&2
  ./scripts/down.sh
  exit 1
fi

# Watches the processes above from now on: a crashed or wedged one is started again (taxi_assets/supervise.py).
start supervisor .venv/bin/python -m taxi_assets.supervise

cat <<EOF
up: the platform is running (automation: $TAXI_AUTOMATION)
  Dagster UI      http://127.0.0.1:$DAGSTER_PORT
  Bento service   http://127.0.0.1:$TAXI_SERVICE_PORT   (Swagger UI at /, once a model is deployed)
  Evidently UI    http://127.0.0.1:$TAXI_EVIDENTLY_PORT   (monthly reports, dashboards by month and window)
  Prometheus      http://127.0.0.1:$TAXI_PROMETHEUS_PORT   (Alerts tab: the alert rules and their state)
  Pushgateway     http://127.0.0.1:$TAXI_PUSHGATEWAY_PORT
  Alertmanager    http://127.0.0.1:$TAXI_ALERTMANAGER_PORT   (grouped alerts, silences; notifications: $TAXI_ALERT_NOTIFICATIONS)
  logs            $logs/*.log
  watched by      the supervisor: a crashed or wedged process is restarted (status: make up, or
                  .venv/bin/python -m taxi_assets.supervise --status; metric taxi_platform_process_up)
  stop            make down
EOF

if [ "$foreground" = true ]; then
  trap './scripts/down.sh; exit 0' INT TERM
  echo "up: in the foreground: Ctrl-C stops everything"
  while true; do sleep 3600 & wait $!; done
fi
trap - INT TERM
