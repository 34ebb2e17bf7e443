#!/usr/bin/env bash
# The whole test suite, each part in the environment it belongs to:
#   .venv-worker: tests/unit, tests/model (the judge core: torch, vLLM)
#   .venv-api:    tests/api (the real gateway app), tests/integration (gateway + real Redis + real Celery
#                 worker subprocesses running the real small model in .venv-worker)
# Needs Redis: the one answering at TEST_REDIS_URL (default redis://127.0.0.1:6379/14), else a throwaway
# redis-server started here on a free port. Exits non-zero if either part fails. Extra args go to both pytest runs.
set -uo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/14}"

redis_pid=""
cleanup() { [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; [ -n "${redis_dir:-}" ] && rm -rf "$redis_dir"; }
trap cleanup EXIT
if ! .venv-api/bin/python -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$TEST_REDIS_URL" 2>/dev/null; then
  command -v redis-server >/dev/null || { echo "test: no Redis at $TEST_REDIS_URL and no redis-server (apt-get install -y redis-server)" >&2; exit 2; }
  port="$(.venv-api/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")"
  redis_dir="$(mktemp -d)"
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$redis_dir" >/dev/null &
  redis_pid=$!
  export TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

worker_paths=()
for path in tests/unit tests/model; do
  if compgen -G "$path/test_*.py" >/dev/null; then worker_paths+=("$path"); fi
done
status=0
if [ ${#worker_paths[@]} -gt 0 ]; then
  echo "test: ${worker_paths[*]} (.venv-worker)"
  .venv-worker/bin/python -m pytest "${worker_paths[@]}" -q "$@" || status=1
fi
echo "test: tests/api tests/integration (.venv-api; workers run in .venv-worker)"
.venv-api/bin/python -m pytest tests/api tests/integration -q "$@" || status=1
exit $status
