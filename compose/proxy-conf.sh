#!/usr/bin/env bash
# Prints the proxy's nginx configuration: compose/nginx.conf.template with its placeholders (between at signs) filled from the
# environment. The one renderer for compose (compose/start-proxy.sh) and `make up` (scripts/stack.sh), so both get
# the same limits. Usage: PROXY_LISTEN=HOST:PORT PROXY_UPSTREAM=HOST:PORT PROXY_STATE_DIR=DIR proxy-conf.sh > nginx.conf
#
# The limits are settings (shared/settings.py, docs/settings.md; the defaults below are the same, a test keeps them
# in step): PROXY_CLIENT_HEADER_TIMEOUT_S, PROXY_CLIENT_BODY_TIMEOUT_S, PROXY_CONN_PER_CLIENT, PROXY_CONN_TOTAL,
# PROXY_RATE_PER_CLIENT, PROXY_POST_RATE_PER_CLIENT; and the gateway's own MAX_UPLOAD_BYTES, MAX_REQUEST_BYTES,
# MAX_CONCURRENT_UPLOADS, SCORE_TIMEOUT_S, which the proxy's body caps, upload slots and read timeout follow.
set -euo pipefail
HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
TEMPLATE="${PROXY_TEMPLATE:-$HERE/nginx.conf.template}"
# The multipart envelope around an uploaded file (api/main.py MULTIPART_OVERHEAD_BYTES): the gateway allows it too.
MULTIPART_OVERHEAD_BYTES=65536

fail() { echo "proxy-conf: $*" >&2; exit 2; }

whole() {  # name, value, minimum: a whole number, at least minimum
  [[ "$2" =~ ^[0-9]+$ ]] && (( $2 >= $3 )) || fail "$1 must be a whole number >= $3 (got '${2:0:40}')"
  echo "$2"
}

LISTEN="${PROXY_LISTEN:?set PROXY_LISTEN (HOST:PORT or PORT the proxy listens on)}"
UPSTREAM="${PROXY_UPSTREAM:?set PROXY_UPSTREAM (HOST:PORT of the gateway)}"
STATE_DIR="${PROXY_STATE_DIR:?set PROXY_STATE_DIR (a writable folder for the pid and temporary files)}"
[[ "$LISTEN$UPSTREAM$STATE_DIR" != *[@\;{}\'\"[:space:]]* ]] || fail "PROXY_LISTEN, PROXY_UPSTREAM, PROXY_STATE_DIR: no spaces, quotes, ; { } or @"

header_timeout=$(whole PROXY_CLIENT_HEADER_TIMEOUT_S "${PROXY_CLIENT_HEADER_TIMEOUT_S:-5}" 1)
body_timeout=$(whole PROXY_CLIENT_BODY_TIMEOUT_S "${PROXY_CLIENT_BODY_TIMEOUT_S:-10}" 1)
conn_per_client=$(whole PROXY_CONN_PER_CLIENT "${PROXY_CONN_PER_CLIENT:-32}" 1)
conn_total=$(whole PROXY_CONN_TOTAL "${PROXY_CONN_TOTAL:-512}" 1)
rate=$(whole PROXY_RATE_PER_CLIENT "${PROXY_RATE_PER_CLIENT:-20}" 1)
post_rate=$(whole PROXY_POST_RATE_PER_CLIENT "${PROXY_POST_RATE_PER_CLIENT:-5}" 1)
upload_bytes=$(whole MAX_UPLOAD_BYTES "${MAX_UPLOAD_BYTES:-209715200}" 1024)
request_bytes=$(whole MAX_REQUEST_BYTES "${MAX_REQUEST_BYTES:-1048576}" 1024)
concurrent_uploads=$(whole MAX_CONCURRENT_UPLOADS "${MAX_CONCURRENT_UPLOADS:-2}" 1)
score_timeout="${SCORE_TIMEOUT_S:-60}"
[[ "$score_timeout" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "SCORE_TIMEOUT_S must be a number of seconds (got '${score_timeout:0:40}')"
# The gateway answers a score request by SCORE_TIMEOUT_S (its own 504): the proxy waits longer, so the client gets
# the gateway's answer, never the proxy's timeout.
read_timeout=$(( ${score_timeout%%.*} + 30 ))
(( conn_total * 2 + 64 <= 4096 )) || fail "PROXY_CONN_TOTAL over 2016 needs more than the 4096 worker_connections"

rendered="$(sed -e "s|@LISTEN@|$LISTEN|g" \
    -e "s|@UPSTREAM@|$UPSTREAM|g" \
    -e "s|@STATE_DIR@|$STATE_DIR|g" \
    -e "s|@WORKER_CONNECTIONS@|4096|g" \
    -e "s|@CLIENT_HEADER_TIMEOUT_S@|$header_timeout|g" \
    -e "s|@CLIENT_BODY_TIMEOUT_S@|$body_timeout|g" \
    -e "s|@CONN_PER_CLIENT@|$conn_per_client|g" \
    -e "s|@CONN_TOTAL@|$conn_total|g" \
    -e "s|@RATE_PER_CLIENT@|$rate|g" \
    -e "s|@DELAY_PER_CLIENT@|$(( rate * 2 ))|g" \
    -e "s|@BURST_PER_CLIENT@|$(( rate * 4 ))|g" \
    -e "s|@POST_RATE_PER_CLIENT@|$post_rate|g" \
    -e "s|@POST_DELAY_PER_CLIENT@|$(( post_rate * 2 ))|g" \
    -e "s|@POST_BURST_PER_CLIENT@|$(( post_rate * 4 ))|g" \
    -e "s|@REQUEST_MAX_BODY_BYTES@|$request_bytes|g" \
    -e "s|@UPLOAD_MAX_BODY_BYTES@|$(( upload_bytes + MULTIPART_OVERHEAD_BYTES ))|g" \
    -e "s|@UPLOADS_AT_ONCE@|$(( concurrent_uploads * 2 ))|g" \
    -e "s|@READ_TIMEOUT_S@|$read_timeout|g" \
    -e "s|@UPLOAD_READ_TIMEOUT_S@|$(( read_timeout > 300 ? read_timeout : 300 ))|g" \
    "$TEMPLATE")"
left="$(grep -o '@[A-Z_]*@' <<<"$rendered" | head -1 || true)"
[ -z "$left" ] || fail "the template names $left, which this script does not fill"
printf '%s\n' "$rendered"
