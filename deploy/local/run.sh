#!/usr/bin/env bash
# Runs the whole gateway locally: Tansu (sqlite storage under .data/), the services
# (the SMPP server included), the carrier simulator; then the demo. Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA_DIR:-.data}
BIN=${LOCAL_BIN:-target/release}  # not SMSGW_*: those are config overrides
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
mkdir -p "$DATA/logs"
pids=()

stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  # Newest first: the services drain, commit and unbind while the carrier and the
  # broker are still up; the broker goes last.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  echo "stopped."
}
trap stop INT TERM EXIT

start() { # name, command...
  local name=$1; shift
  "$@" >"$DATA/logs/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!, log $DATA/logs/$name.log)"
}

wait_port() { # port, name
  for _ in $(seq 1 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$2 did not listen on port $1; see $DATA/logs/" >&2
  exit 1
}

start tansu "$TANSU" broker --listener-url tcp://127.0.0.1:9092 \
  --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine "sqlite://$(case "$DATA" in /*) echo "/$DATA";; *) echo "$DATA";; esac)/tansu.db"
wait_port 9092 tansu
# Tansu 0.6's sqlite engine lacks an index its fetches need (docs/operations.md).
python3 deploy/local/tansu-index.py "$DATA/tansu.db"
"$BIN/smsgw-admin" bootstrap deploy/local/bootstrap.toml >"$DATA/logs/bootstrap.log" 2>&1
echo "topics created (see $DATA/logs/bootstrap.log)"
start carrier-sim "$BIN/smsgw-carrier-sim" deploy/local/carrier-sim.toml
wait_port 2775 carrier-sim
for s in optout receipt router dispatcher smpp-server ingest; do
  start "$s" "$BIN/smsgw-$s" "deploy/local/$s.toml"
done
wait_port 8080 ingest
echo
"$BIN/smsgw-admin" demo http://127.0.0.1:8080 http://127.0.0.1:2776
echo
echo "The gateway is running: POST http://127.0.0.1:8080/v1/messages, or bind over SMPP to"
echo "127.0.0.1:2780 (system_id demo, password demo1234); metrics on :9100-:9105."
echo "Press Ctrl-C to stop."
if [ "${DEMO_ONLY:-}" = 1 ]; then exit 0; fi
wait
