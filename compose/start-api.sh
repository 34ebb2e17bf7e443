#!/usr/bin/env bash
# The gateway; it refuses to start without API_KEY. LISTEN_HOST/LISTEN_PORT move it (a host-network run).
# Behind the proxy (compose's `proxy` service); its own limits as in scripts/stack.sh: idle keep-alive connections
# closed after 5 s, at most 1024 connections and requests at once (beyond: 503 at once), a listen backlog of 1024,
# 5 s for requests in progress at shutdown.
set -euo pipefail
cd /app
exec python -m uvicorn --factory api.main:create_app --host "${LISTEN_HOST:-0.0.0.0}" --port "${LISTEN_PORT:-8000}" \
  --proxy-headers --timeout-keep-alive 5 --limit-concurrency 1024 --backlog 1024 --timeout-graceful-shutdown 5
