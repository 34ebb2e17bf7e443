"""What the proxy tests share: nginx itself (required: `make setup` installs it) and free ports."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        pytest.fail(
            "nginx is not installed: run `make setup` (as root it installs nginx-light), or apt-get install -y"
            " nginx-light"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
