#!/usr/bin/env bash
# The reverse proxy: nginx in the foreground, its configuration rendered from compose/nginx.conf.template by
# compose/proxy-conf.sh (the limits come from the PROXY_* settings and the gateway's MAX_UPLOAD_BYTES,
# MAX_REQUEST_BYTES, SCORE_TIMEOUT_S). PROXY_UPSTREAM (api:8000) is the gateway; LISTEN_HOST/LISTEN_PORT move the
# proxy (a host-network run).
set -euo pipefail
HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
STATE_DIR="${PROXY_STATE_DIR:-/tmp/proxy}"
mkdir -p "$STATE_DIR"
PROXY_LISTEN="${LISTEN_HOST:-0.0.0.0}:${LISTEN_PORT:-8000}" PROXY_UPSTREAM="${PROXY_UPSTREAM:-api:8000}" \
  PROXY_STATE_DIR="$STATE_DIR" "$HERE/proxy-conf.sh" >"$STATE_DIR/nginx.conf"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
GLOBAL="daemon off;"
# Started as root (the image's default): the workers, which parse what clients send, run as www-data.
[ "$(id -u)" -ne 0 ] || GLOBAL="daemon off; user www-data;"
exec "$NGINX" -p "$STATE_DIR" -e stderr -c "$STATE_DIR/nginx.conf" -g "$GLOBAL"
