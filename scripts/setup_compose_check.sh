#!/usr/bin/env bash
# docker-compose 1.x from PyPI into var/tools/compose-venv, to validate compose/docker-compose.yml offline
# (no Docker engine needed). PyYAML 5.4.1 must be pre-built without build isolation for it to install.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
VENV="$ROOT/var/tools/compose-venv"
[ -x "$VENV/bin/docker-compose" ] && exit 0
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "cython<3" wheel setuptools
"$VENV/bin/pip" install -q --no-build-isolation pyyaml==5.4.1
"$VENV/bin/pip" install -q docker-compose==1.29.2
"$VENV/bin/docker-compose" version --short
