#!/usr/bin/env bash
# The gateway; it refuses to start without API_KEY. LISTEN_HOST/LISTEN_PORT move it (a host-network run).
set -euo pipefail
cd /app
exec python -m uvicorn --factory api.main:create_app --host "${LISTEN_HOST:-0.0.0.0}" --port "${LISTEN_PORT:-8000}" --proxy-headers
