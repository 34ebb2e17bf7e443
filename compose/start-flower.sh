#!/usr/bin/env bash
# Flower on :5555, behind FLOWER_BASIC_AUTH=user:password (Flower reads FLOWER_* variables). It shows every
# task's arguments and can revoke tasks, so it never starts without a password unless FLOWER_ADDRESS=127.0.0.1
# (only this host can reach it; scripts/stack.sh runs the native stack's Flower that way).
set -euo pipefail
# LISTEN_HOST/LISTEN_PORT move it (a host-network run); FLOWER_ADDRESS is the older name of LISTEN_HOST.
address="${FLOWER_ADDRESS:-${LISTEN_HOST:-0.0.0.0}}"
if [[ -z "${FLOWER_BASIC_AUTH:-}" && "$address" != "127.0.0.1" ]]; then
  echo "start-flower: set FLOWER_BASIC_AUTH=user:password (Flower's login), or FLOWER_ADDRESS=127.0.0.1 to serve" \
    "this host only; Flower does not listen on $address without a password" >&2
  exit 2
fi
cd /app
exec python -m celery -A shared.celery_client flower --address="$address" --port="${LISTEN_PORT:-5555}"
