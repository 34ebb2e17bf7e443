#!/usr/bin/env bash
# Flower on :5555; FLOWER_BASIC_AUTH=user:password protects it (Flower reads FLOWER_* variables).
set -euo pipefail
cd /app
exec python -m celery -A shared.celery_client flower --address=0.0.0.0 --port=5555
