#!/usr/bin/env bash
# The gateway; it refuses to start without API_KEY.
set -euo pipefail
cd /app
exec python -m uvicorn --factory api.main:create_app --host 0.0.0.0 --port 8000 --proxy-headers
