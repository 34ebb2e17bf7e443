#!/usr/bin/env bash
# Offline validators of compose/docker-compose.yml (no Docker engine needed), each in its own venv under var/tools/:
#   compose-venv:    docker-compose 1.x from PyPI (PyYAML 5.4.1 must be pre-built without build isolation);
#   compose-v2-venv: podman-compose (interpolation and merging as compose v2 does them, `--dry-run config`) and
#                    check-jsonschema, whose vendored compose-spec schema is the one `docker compose` v2 validates with.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
VENV="$ROOT/var/tools/compose-venv"
V2_VENV="$ROOT/var/tools/compose-v2-venv"
if [ ! -x "$VENV/bin/docker-compose" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "cython<3" wheel setuptools
  "$VENV/bin/pip" install -q --no-build-isolation pyyaml==5.4.1
  "$VENV/bin/pip" install -q docker-compose==1.29.2
fi
"$VENV/bin/docker-compose" version --short
if [ ! -x "$V2_VENV/bin/podman-compose" ] || [ ! -x "$V2_VENV/bin/check-jsonschema" ]; then
  python3 -m venv "$V2_VENV"
  "$V2_VENV/bin/pip" install -q podman-compose==1.6.0 check-jsonschema==0.39.0
fi
"$V2_VENV/bin/podman-compose" --dry-run version 2>/dev/null | head -1 || true
