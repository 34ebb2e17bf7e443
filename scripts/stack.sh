#!/usr/bin/env bash
# The job stack natively, without Docker: `scripts/stack.sh up|down|status`.
#
# up:   Redis (reused when one answers at REDIS_URL, else a local `redis-server` started here), one Celery
#       worker per GPU on gpu.N pinned with CUDA_VISIBLE_DEVICES (one worker on `cpu` without GPUs), the
#       gateway on 127.0.0.1:8000 and Flower on 127.0.0.1:5555, in the background. Logs and pid files go
#       to var/run/; the API key is read from API_KEY or generated once into var/run/api_key.
# down: stops exactly what `up` started (by the pid files), nothing else.
#
# STACK_WORKERS="gpu.0 gpu.1" overrides the worker queues (e.g. two CPU stand-ins for GPU workers).
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
RUN_DIR="${RUN_DIR:-$ROOT/var/run}"
API_HOST="${API_HOST:-127.0.0.1}"
API_PORT="${API_PORT:-8000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY_API="$ROOT/.venv-api/bin/python"
PY_WORKER="$ROOT/.venv-worker/bin/python"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}"

say() { echo "stack: $*" >&2; }

# Start a command in its own session (so `down` can stop its whole process tree), logging to RUN_DIR/NAME.log.
start() {  # name, command...
  local name="$1"; shift
  if [ -f "$RUN_DIR/$name.pid" ] && kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
    say "$name is already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  say "started $name (pid $!, log $RUN_DIR/$name.log)"
}

redis_answers() {
  "$PY_API" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$REDIS_URL" 2>/dev/null
}

port_free() {  # port
  ! "$PY_API" -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1]))) == 0 else 1)" "$1"
}

worker_queues() {
  if [ -n "${STACK_WORKERS:-}" ]; then
    echo "$STACK_WORKERS"
  elif command -v nvidia-smi >/dev/null && [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -gt 0 ]; then
    seq 0 $(( $(nvidia-smi -L | wc -l) - 1 )) | sed 's/^/gpu./' | tr '\n' ' '
  else
    echo cpu
  fi
}

up() {
  for python in "$PY_API" "$PY_WORKER"; do
    [ -x "$python" ] || { say "missing $python; run 'make setup' first"; exit 2; }
  done
  mkdir -p "$RUN_DIR"
  if [ -z "${API_KEY:-}" ]; then
    if [ ! -s "$RUN_DIR/api_key" ]; then
      (umask 077; "$PY_API" -c "import secrets; print(secrets.token_urlsafe(32))" >"$RUN_DIR/api_key")
      say "generated an API key into $RUN_DIR/api_key"
    fi
    API_KEY="$(cat "$RUN_DIR/api_key")"
  fi
  export API_KEY

  if redis_answers; then
    say "using the Redis that answers at $REDIS_URL"
  elif command -v redis-server >/dev/null; then
    local port; port="$("$PY_API" -c "from urllib.parse import urlparse; import sys; print(urlparse(sys.argv[1]).port or 6379)" "$REDIS_URL")"
    start redis redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly yes --dir "$RUN_DIR"
    for _ in $(seq 50); do redis_answers && break; sleep 0.2; done
    redis_answers || { say "redis-server did not come up; see $RUN_DIR/redis.log"; exit 1; }
  else
    say "no Redis answers at $REDIS_URL and redis-server is not installed: apt-get install -y redis-server"
    exit 1
  fi

  for port in "$API_PORT" "$FLOWER_PORT"; do
    if port_free "$port"; then :; elif [ -f "$RUN_DIR/api.pid" ] && kill -0 "$(cat "$RUN_DIR/api.pid")" 2>/dev/null; then :; else
      say "port $port is taken by another program; set API_PORT / FLOWER_PORT"; exit 1
    fi
  done

  local queue index
  for queue in $(worker_queues); do
    index="${queue#gpu.}"
    [ "$queue" = cpu ] && index=""
    # One process per GPU, pinned to it; solo pool (CUDA is not fork-safe), one task at a time. Restarted when
    # it exits with 75: its watchdog stopped a step stuck in one chunk past its time limit (HARD_STOP_GRACE_S).
    start "worker-$queue" bash -c 'while :; do "$@"; code=$?; [ "$code" -eq 75 ] || exit "$code"
      echo "stack: the worker stopped hard (exit 75); restarting it" >&2; sleep 2; done' restart-on-75 \
      env CUDA_VISIBLE_DEVICES="$index" "$PY_WORKER" -m celery -A workers.celery_app worker \
      -Q "$queue" -n "${queue/./}@%h" --pool=solo --concurrency=1 -E --loglevel=INFO
  done
  start api "$PY_API" -m uvicorn --factory api.main:create_app --host "$API_HOST" --port "$API_PORT"
  start flower "$PY_API" -m celery -A shared.celery_client flower --address=127.0.0.1 --port="$FLOWER_PORT"

  say "waiting for the gateway and a worker (GET /healthz)"
  local deadline=$(( SECONDS + READY_TIMEOUT_S ))
  until curl -fsS "http://$API_HOST:$API_PORT/healthz" >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then
      say "not healthy after ${READY_TIMEOUT_S}s:"; curl -sS "http://$API_HOST:$API_PORT/healthz" >&2 || true
      exit 1
    fi
    sleep 1
  done
  say "up: gateway http://$API_HOST:$API_PORT (docs /docs), Flower http://127.0.0.1:$FLOWER_PORT"
  say "API key: export API_KEY=\$(cat $RUN_DIR/api_key)"
}

down() {
  local pid_file name pid
  [ -d "$RUN_DIR" ] || { say "nothing to stop"; return; }
  for pid_file in "$RUN_DIR"/*.pid; do
    [ -e "$pid_file" ] || continue
    name="$(basename "$pid_file" .pid)"
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"  # the session `start` created: its whole tree
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
      say "stopped $name (pid $pid)"
    fi
    rm -f "$pid_file"
  done
}

status() {
  local pid_file
  for pid_file in "$RUN_DIR"/*.pid; do
    [ -e "$pid_file" ] || { say "nothing started"; break; }
    if kill -0 "$(cat "$pid_file")" 2>/dev/null; then state=running; else state=dead; fi
    echo "$(basename "$pid_file" .pid): $state (pid $(cat "$pid_file"))"
  done
  curl -sS "http://$API_HOST:$API_PORT/healthz" && echo || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
