#!/usr/bin/env bash
# The job stack natively, without Docker: `scripts/stack.sh up|down|status`.
#
# up:   Redis (reused when one answers at REDIS_URL, else a local `redis-server` started here), one Celery
#       worker per GPU on gpu.N pinned with CUDA_VISIBLE_DEVICES (one worker on `cpu` without GPUs), the
#       reverse proxy (nginx, compose/nginx.conf.template: client timeouts, body caps, per-client connection and
#       rate limits) on API_HOST:API_PORT (127.0.0.1:8000) in front of the gateway on 127.0.0.1:API_INTERNAL_PORT
#       (8001), and Flower on 127.0.0.1:5555, in the background. Logs and pid files go to RUN_DIR (var/run/);
#       the API key is read from API_KEY or generated once into RUN_DIR/api_key.
# down: stops exactly what `up` started, nothing else: every process of each session `up` started (by the pid
#       files), TERM first, KILL for what still runs STACK_STOP_GRACE_S (10) later (a worker waiting on a task).
#
# STACK_WORKERS="gpu.0 gpu.1" overrides the worker queues (e.g. two CPU stand-ins for GPU workers); a queue listed
# more than once starts that many workers, named apart (STACK_WORKERS="cpu cpu cpu": cpu-1@HOST, cpu-2@HOST, ...),
# which pull the chunks of one predict job from the shared queue. A GPU worker consumes gpu.N and the shared gpu.
# STACK_NO_PROXY=1 serves the gateway itself on API_HOST:API_PORT, without the proxy (no client timeouts worth the
# name, no rate limits): only for a machine where nginx cannot be installed.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
RUN_DIR="${RUN_DIR:-$ROOT/var/run}"
API_HOST="${API_HOST:-127.0.0.1}"
API_PORT="${API_PORT:-8000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
API_INTERNAL_PORT="${API_INTERNAL_PORT:-8001}"
STACK_NO_PROXY="${STACK_NO_PROXY:-0}"
STOP_GRACE_S="${STACK_STOP_GRACE_S:-10}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY_API="$ROOT/.venv-api/bin/python"
PY_WORKER="$ROOT/.venv-worker/bin/python"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}"

say() { echo "stack: $*" >&2; }

# The gateway's own defence, behind the proxy or not: idle keep-alive connections closed after 5 s, at most 1024
# connections and requests at once (beyond: 503 at once; the proxy lets through at most PROXY_CONN_TOTAL), a listen
# backlog of 1024, and 5 s for requests in progress at shutdown. (No --h11-max-incomplete-event-size: uvicorn
# parses with httptools here; headers are capped by the proxy's large_client_header_buffers, 4 x 8 KiB.)
UVICORN_LIMITS=(--timeout-keep-alive 5 --limit-concurrency 1024 --backlog 1024 --timeout-graceful-shutdown 5)

nginx_binary() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }
}

# The proxy's limits as the gateway sees its settings (environment, then .env): PROXY_*, and the body caps and score
# timeout the proxy follows. compose/proxy-conf.sh renders the same template compose uses.
proxy_settings() {
  "$PY_API" -c 'import sys
from shared.settings import get_settings
settings = get_settings()
for name in sys.argv[1:]:
    print(f"export {name}={getattr(settings, name)}")' PROXY_CLIENT_HEADER_TIMEOUT_S PROXY_CLIENT_BODY_TIMEOUT_S \
    PROXY_CONN_PER_CLIENT PROXY_CONN_TOTAL PROXY_RATE_PER_CLIENT PROXY_POST_RATE_PER_CLIENT MAX_UPLOAD_BYTES \
    MAX_REQUEST_BYTES SCORE_TIMEOUT_S
}

start_proxy() {  # nginx: nginx's binary
  local nginx="$1" state="$RUN_DIR/proxy" rendered global="daemon off;"
  mkdir -p "$state" && chmod 755 "$state"  # run as root, nginx's workers (nobody) spool request bodies in there
  if [ "$(id -u)" -eq 0 ] && ! runuser -u nobody -- test -x "$state" 2>/dev/null; then
    # RUN_DIR lies where nobody cannot reach (a home folder of mode 700): the workers stay root, as the rest of make up.
    global="daemon off; user root;"
  fi
  rendered="$( (eval "$(proxy_settings)" && PROXY_LISTEN="$API_HOST:$API_PORT" \
    PROXY_UPSTREAM="127.0.0.1:$API_INTERNAL_PORT" PROXY_STATE_DIR="$state" compose/proxy-conf.sh) )" || {
    say "could not write the proxy's configuration (see above)"; exit 1; }
  printf '%s\n' "$rendered" >"$state/nginx.conf"
  "$nginx" -t -q -p "$state" -e stderr -c "$state/nginx.conf" -g "$global" || { say "nginx refused $state/nginx.conf"; exit 1; }
  start proxy "$nginx" -p "$state" -e stderr -c "$state/nginx.conf" -g "$global"
}

# Start a command in its own session (so `down` can stop its whole process tree), logging to RUN_DIR/NAME.log
# through scripts/rotate_log.py (same session): rotated past STACK_LOG_MAX_MB (10), STACK_LOG_FILES (5) kept.
start() {  # name, command...
  local name="$1"; shift
  if [ -f "$RUN_DIR/$name.pid" ] && kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
    say "$name is already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  setsid bash -c 'set -o pipefail; log="$1" rotate="$2" python="$3"; shift 3
    "$@" 2>&1 < /dev/null | "$python" "$rotate" "$log"' logged "$RUN_DIR/$name.log" "$ROOT/scripts/rotate_log.py" \
    "$PY_API" "$@" >/dev/null 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  say "started $name (pid $!, log $RUN_DIR/$name.log)"
}

redis_answers() {  # [url]
  "$PY_API" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "${1:-$REDIS_URL}" 2>/dev/null
}

secret_file() {  # path what: a random secret made once (mode 600), printed
  if [ ! -s "$1" ]; then
    (umask 077; "$PY_API" -c "import secrets; print(secrets.token_urlsafe(32))" >"$1")
    say "generated $2 into $1"
  fi
  cat "$1"
}

with_password() {  # url password: the URL with the password, unless it carries one already
  "$PY_API" -c "
import sys
from urllib.parse import quote, urlsplit, urlunsplit
url, password = sys.argv[1:]
parts = urlsplit(url)
if parts.password is None:
    parts = parts._replace(netloc=':' + quote(password, safe='') + '@' + parts.netloc.rpartition('@')[2])
print(urlunsplit(parts))" "$1" "$2"
}

warn_without_persistence() {  # a reused Redis that loses queued tasks and announcements on restart
  "$PY_API" -c "
import redis, sys
client = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1, decode_responses=True)
try:
    aof = client.config_get('appendonly').get('appendonly')
    save = client.config_get('save').get('save')
except redis.RedisError as exc:
    print(f'stack: could not read the Redis persistence settings ({type(exc).__name__}); make sure it persists')
    sys.exit()
if aof != 'yes' and not save:
    print('stack: WARNING: the Redis at REDIS_URL has no persistence (appendonly no, save \"\"): a restart of it'
          ' loses queued tasks (the sweeper sends them again, after DISPATCH_GRACE_S). Turn on appendonly yes')
elif aof != 'yes':
    print('stack: note: the Redis at REDIS_URL persists by snapshots only (save ' + save + '); appendonly yes'
          ' loses less on a crash')
" "$REDIS_URL" >&2 || true
}

port_free() {  # port
  ! "$PY_API" -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1]))) == 0 else 1)" "$1"
}

# The GPUs (or MIG instances) this host's workers get, as CUDA_VISIBLE_DEVICES names them (scripts/gpu_devices.sh).
mapfile -t GPU_DEVICES < <("$ROOT/scripts/gpu_devices.sh")

worker_queues() {
  if [ -n "${STACK_WORKERS:-}" ]; then
    echo "$STACK_WORKERS"
  elif [ "${#GPU_DEVICES[@]}" -gt 0 ]; then
    seq 0 $(( ${#GPU_DEVICES[@]} - 1 )) | sed 's/^/gpu./' | tr '\n' ' '
  else
    echo cpu
  fi
}

up() {
  for python in "$PY_API" "$PY_WORKER"; do
    [ -x "$python" ] || { say "missing $python; run 'make setup' first"; exit 2; }
  done
  local nginx=""
  if [ "$STACK_NO_PROXY" = 1 ]; then
    say "STACK_NO_PROXY=1: the gateway faces clients itself (no client timeouts, no rate limits, no per-client caps)"
  else
    nginx="$(nginx_binary)" || {
      say "nginx is missing: make up puts it in front of the gateway (client timeouts, body caps, connection and"
      say "rate limits). Run 'make setup' as root (it installs nginx-light) or 'apt-get install -y nginx-light';"
      say "or set STACK_NO_PROXY=1 to serve the gateway on $API_HOST:$API_PORT without any of that."
      exit 2
    }
  fi
  mkdir -p "$RUN_DIR"
  if [ -z "${API_KEY:-}" ]; then
    if [ ! -s "$RUN_DIR/api_key" ]; then
      (umask 077; "$PY_API" -c "import secrets; print(secrets.token_urlsafe(32))" >"$RUN_DIR/api_key")
      say "generated an API key into $RUN_DIR/api_key"
    fi
    API_KEY="$(cat "$RUN_DIR/api_key")"
  fi
  export API_KEY

  # Our own Redis requires a password generated once, like the API key; REDIS_URL carries it (redis://:PW@host).
  local redis_password own_url
  redis_password="$(secret_file "$RUN_DIR/redis_password" "a Redis password")"
  own_url="$(with_password "$REDIS_URL" "$redis_password")"
  if redis_answers "$own_url" && [ "$own_url" != "$REDIS_URL" ] && ! redis_answers; then
    export REDIS_URL="$own_url"  # our own Redis of an earlier `make up`, still running
    say "using this stack's own Redis at $(sed 's#//[^@]*@#//***@#' <<<"$REDIS_URL")"
  elif redis_answers; then
    say "using the Redis that answers at $(sed 's#//[^@]*@#//***@#' <<<"$REDIS_URL")"
    warn_without_persistence
  elif command -v redis-server >/dev/null; then
    local port; port="$("$PY_API" -c "from urllib.parse import urlparse; import sys; print(urlparse(sys.argv[1]).port or 6379)" "$REDIS_URL")"
    # The password in a config file of mode 600, never on the command line (ps shows that to every user).
    (umask 077; echo "requirepass $redis_password" >"$RUN_DIR/redis.conf")
    start redis redis-server "$RUN_DIR/redis.conf" --bind 127.0.0.1 --port "$port" --save "" --appendonly yes \
      --dir "$RUN_DIR"
    export REDIS_URL="$own_url"
    for _ in $(seq 50); do redis_answers && break; sleep 0.2; done
    redis_answers || { say "redis-server did not come up; see $RUN_DIR/redis.log"; exit 1; }
  else
    say "no Redis answers at $REDIS_URL and redis-server is not installed: apt-get install -y redis-server"
    exit 1
  fi

  local ports=("$API_PORT" "$FLOWER_PORT")
  [ -z "$nginx" ] || ports+=("$API_INTERNAL_PORT")
  for port in "${ports[@]}"; do
    if port_free "$port"; then :; elif [ -f "$RUN_DIR/api.pid" ] && kill -0 "$(cat "$RUN_DIR/api.pid")" 2>/dev/null; then :; else
      say "port $port is taken by another program; set API_PORT / API_INTERNAL_PORT / FLOWER_PORT"; exit 1
    fi
  done

  local queue index name consumes all_queues seen=" "
  all_queues="$(worker_queues)"
  for queue in $all_queues; do
    case "$queue" in
      cpu) index=""; consumes=cpu ;;
      # Its own GPU's queue and the shared one; pinned to the Nth device found (a MIG instance's UUID, or a GPU
      # index), or to index N when none was found (STACK_WORKERS' CPU stand-ins).
      gpu.[0-9]*) index="${queue#gpu.}"; index="${GPU_DEVICES[$index]:-$index}"; consumes="$queue,gpu" ;;
      *) say "STACK_WORKERS: '$queue' is not a queue; use cpu or gpu.N (e.g. STACK_WORKERS=\"cpu cpu\")"; exit 2 ;;
    esac
    # Names are unique per host: a queue listed more than once gets -1, -2, ... (STACK_WORKERS="cpu cpu cpu").
    name="${queue/./}"
    if [ "$(tr ' ' '\n' <<<"$all_queues" | grep -cx "$queue")" -gt 1 ]; then
      local n=1
      while [[ "$seen" == *" $name-$n "* ]]; do n=$((n + 1)); done
      name="$name-$n"
    fi
    seen+="$name "
    # One process per GPU, pinned to it; solo pool (CUDA is not fork-safe), one task at a time. Restarted when
    # it exits with 75 (its watchdog stopped a step stuck in one batch past its time limit, HARD_STOP_GRACE_S), or
    # with any other failure after running a minute (faulthandler's backstop for a call that held the GIL past a
    # score task's limit exits 1); a worker that fails at once (a bad setting) is not restarted in a loop.
    start "worker-$name" bash -c 'while :; do began=$SECONDS; "$@"; code=$?
      [ "$code" -eq 75 ] || { [ "$code" -ne 0 ] && (( SECONDS - began >= 60 )); } || exit "$code"
      echo "stack: the worker stopped hard (exit $code); restarting it" >&2; sleep 2; done' restart-worker \
      env CUDA_VISIBLE_DEVICES="$index" "$PY_WORKER" -m celery -A workers.celery_app worker \
      -Q "$consumes" -n "$name@%h" --pool=solo --concurrency=1 -E --loglevel=INFO
  done
  if [ -n "$nginx" ]; then
    start api "$PY_API" -m uvicorn --factory api.main:create_app --host 127.0.0.1 --port "$API_INTERNAL_PORT" \
      "${UVICORN_LIMITS[@]}"
    start_proxy "$nginx"
  else
    start api "$PY_API" -m uvicorn --factory api.main:create_app --host "$API_HOST" --port "$API_PORT" \
      "${UVICORN_LIMITS[@]}"
  fi
  # Flower shows every task's arguments and can revoke tasks: a login, even on 127.0.0.1 (Flower reads FLOWER_*).
  FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-admin:$(secret_file "$RUN_DIR/flower_password" "Flower's password")}" \
    start flower "$PY_API" -m celery -A shared.celery_client flower --address=127.0.0.1 --port="$FLOWER_PORT"

  say "waiting for the gateway and a worker (GET /readyz)"
  local deadline=$(( SECONDS + READY_TIMEOUT_S ))
  until curl -fsS "http://$API_HOST:$API_PORT/readyz" >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then
      say "not healthy after ${READY_TIMEOUT_S}s:"; curl -sS "http://$API_HOST:$API_PORT/readyz" >&2 || true
      exit 1
    fi
    sleep 1
  done
  say "up: gateway http://$API_HOST:$API_PORT (docs /docs), Flower http://127.0.0.1:$FLOWER_PORT"
  say "API key: export API_KEY=\$(cat $RUN_DIR/api_key); Flower's login: admin / \$(cat $RUN_DIR/flower_password)"
}

# From /proc (procps may be missing): state, parent, process group and session follow the command's name.
session_members() {  # sid: the pids of every live process in that session, one a line (zombies are gone already)
  local stat line state ppid pgrp sid pid
  for stat in /proc/[0-9]*/stat; do
    { read -r line <"$stat"; } 2>/dev/null || continue
    read -r state ppid pgrp sid _ <<<"${line##*) }"
    if [ "$sid" = "$1" ] && [ "$state" != Z ]; then pid="${stat#/proc/}"; echo "${pid%/stat}"; fi
  done
  return 0
}

process_group() {  # pid
  local line state ppid pgrp
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
  read -r state ppid pgrp _ <<<"${line##*) }"
  echo "$pgrp"
}

# TERM each session (its process group, and any member that left the group), wait up to STOP_GRACE_S for all of
# them together, KILL what is left (a worker waits for its task on TERM: Celery's warm shutdown), and say so.
stop_sessions() {  # name...: those with a pid file in RUN_DIR
  local name sid pid left=() members
  for name in "$@"; do
    [ -f "$RUN_DIR/$name.pid" ] || continue
    sid="$(cat "$RUN_DIR/$name.pid")"
    members="$(session_members "$sid")"
    if [ -z "$members" ]; then rm -f "$RUN_DIR/$name.pid"; continue; fi
    kill -TERM -- "-$sid" 2>/dev/null || true
    for pid in $members; do  # once each: a second TERM means "hurry" to some programs
      [ "$(process_group "$pid")" = "$sid" ] || kill -TERM "$pid" 2>/dev/null || true
    done
    left+=("$name")
  done
  [ ${#left[@]} -gt 0 ] || return 0
  local deadline=$(( SECONDS + STOP_GRACE_S )) running
  while :; do
    running=""
    for name in "${left[@]}"; do [ -z "$(session_members "$(cat "$RUN_DIR/$name.pid")")" ] || running=1; done
    [ -n "$running" ] && (( SECONDS < deadline )) || break
    sleep 0.5
  done
  local status=0 count
  for name in "${left[@]}"; do
    sid="$(cat "$RUN_DIR/$name.pid")"
    members="$(session_members "$sid")"
    if [ -z "$members" ]; then
      say "stopped $name (session $sid)"
    else
      count=$(wc -w <<<"$members")
      say "$name: $count process(es) still running ${STOP_GRACE_S}s after TERM (a task in progress?); killing them"
      for pid in $members; do kill -KILL "$pid" 2>/dev/null || true; done
      for _ in $(seq 20); do [ -n "$(session_members "$sid")" ] || break; sleep 0.25; done
      if [ -n "$(session_members "$sid")" ]; then
        say "$name: processes $(session_members "$sid" | tr '\n' ' ')survive KILL; see ps -s $sid"; status=1; continue
      fi
      say "stopped $name (session $sid, killed)"
    fi
    rm -f "$RUN_DIR/$name.pid"
  done
  return "$status"
}

down() {
  [ -d "$RUN_DIR" ] || { say "nothing to stop"; return; }
  local others=() pid_file name status=0
  for pid_file in "$RUN_DIR"/*.pid; do
    [ -e "$pid_file" ] || continue
    name="$(basename "$pid_file" .pid)"
    case "$name" in proxy|api|flower|redis) ;; *) others+=("$name") ;; esac
  done
  # Clients first (the proxy), then the gateway, Flower and the workers together, Redis last (workers talk to it
  # while they stop).
  stop_sessions proxy || status=1
  stop_sessions api flower "${others[@]}" || status=1
  stop_sessions redis || status=1
  return "$status"
}

status() {
  local pid_file
  for pid_file in "$RUN_DIR"/*.pid; do
    [ -e "$pid_file" ] || { say "nothing started"; break; }
    if kill -0 "$(cat "$pid_file")" 2>/dev/null; then state=running; else state=dead; fi
    echo "$(basename "$pid_file" .pid): $state (pid $(cat "$pid_file"))"
  done
  curl -sS "http://$API_HOST:$API_PORT/readyz" && echo || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
