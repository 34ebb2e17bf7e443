#!/usr/bin/env bash
# One Celery worker on one queue (gpu.N or cpu): solo pool, one task at a time, task events on for Flower.
# The embedded models (SmolLM2 judge, MiniLM text encoder) are put into the shared volume on first start.
set -euo pipefail
QUEUE="${1:?usage: start-worker.sh gpu.N|cpu}"
cd /app
if { [ -z "${MODEL_PATH:-}" ] && [ ! -f "$SHARED_DIR/models/SmolLM2-135M-Instruct/config.json" ]; } ||
   { [ -z "${TEXT_ENCODER_PATH:-}" ] && [ ! -f "$SHARED_DIR/models/all-MiniLM-L6-v2/config.json" ]; }; then
  scripts/arena setup-model
fi
exec python -m celery -A workers.celery_app worker -Q "$QUEUE" -n "${QUEUE/./}@%h" \
  --pool=solo --concurrency=1 -E --loglevel="${LOG_LEVEL:-INFO}"
