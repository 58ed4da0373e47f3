#!/usr/bin/env bash
# Stops everything `make up` (scripts/up.sh) started: each process named by a pid file in $TAXI_RUN_DIR
# (data/run), with every process it started (the Bento workers, Dagster's code servers and runs). The tree is
# collected before anything is signalled, so children that outlive their parent are stopped too. SIGTERM first
# (the service flushes its log, runs end cleanly), SIGKILL for what is left after 20 s.
set -uo pipefail
cd "$(dirname "$0")/.."
eval "$(.venv/bin/taxi-settings --shell)"
run=$TAXI_RUN_DIR

descendants() {
  local children
  children=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
  for child in $children; do
    echo "$child"
    descendants "$child"
  done
}

# The supervisor first: it would start again what is being stopped.
if [ -e "$run/supervisor.pid" ]; then
  supervisor=$(cat "$run/supervisor.pid")
  kill -TERM "$supervisor" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$supervisor" 2>/dev/null || break; sleep 0.1; done
  rm -f "$run/supervisor.pid"
fi

pids=()
names=()
for pidfile in "$run"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  name=$(basename "$pidfile" .pid)
  if kill -0 "$pid" 2>/dev/null; then
    names+=("$name ($pid)")
    pids+=("$pid" $(descendants "$pid"))
  fi
  rm -f "$pidfile"
done
if [ ${#pids[@]} -eq 0 ]; then
  echo "down: nothing is running"
  exit 0
fi

# Sets `alive` to those of the given pids that have not finished (a zombie has: only its parent's wait is missing).
unfinished() {
  alive=()
  local pid state
  for pid in "$@"; do
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    [ -n "$state" ] && [ "${state:0:1}" != Z ] && alive+=("$pid")
  done
}

echo "down: stopping ${names[*]}"
kill -TERM "${pids[@]}" 2>/dev/null
for _ in $(seq 200); do
  unfinished "${pids[@]}"
  [ ${#alive[@]} -eq 0 ] && break
  sleep 0.1
done
if [ ${#alive[@]} -gt 0 ]; then
  echo "down: still running after 20 s, killing: ${alive[*]}"
  kill -KILL "${alive[@]}" 2>/dev/null
  # A killed process takes a moment to exit on a loaded machine (seen at load 16): "stopped" means gone.
  for _ in $(seq 100); do
    unfinished "${alive[@]}"
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.1
  done
fi
echo "down: stopped"
