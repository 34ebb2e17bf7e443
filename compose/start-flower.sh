#!/usr/bin/env bash
# Flower on :5555; FLOWER_BASIC_AUTH=user:password protects it (Flower reads FLOWER_* variables).
# LISTEN_HOST/LISTEN_PORT move it (a host-network run).
set -euo pipefail
cd /app
exec python -m celery -A workers.celery_app flower --address="${LISTEN_HOST:-0.0.0.0}" --port="${LISTEN_PORT:-5555}"
