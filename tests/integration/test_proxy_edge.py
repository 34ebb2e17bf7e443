"""The edge (nginx with the project's config in front of a real gateway): what it logs, and what it reads before it
knows the caller (issue 31). Same set-up as test_proxy_limits.py; the proxy's own output is read back here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import API_KEY
from tests.integration.nginx import free_port, nginx_binary, stop, wait_for_port
from tests.integration.test_proxy_limits import PROXY_CONF
from tests.integration.test_proxy_limits import gateway as gateway  # noqa: F401 (a module fixture)


@pytest.fixture
def edge(gateway) -> Iterator[Callable[..., tuple[int, Path]]]:  # noqa: F811
    """start(**settings) -> (port, the proxy's log) of an nginx with the project's config before the gateway."""
    started: list[tuple[subprocess.Popen, str]] = []

    def start(**settings: int) -> tuple[int, Path]:
        state_dir = tempfile.mkdtemp(prefix="arena-edge-")  # not under tmp_path (700): nginx's workers are nobody
        os.chmod(state_dir, 0o755)
        port = free_port()
        env = {
            **os.environ, "PROXY_LISTEN": f"127.0.0.1:{port}", "PROXY_UPSTREAM": f"127.0.0.1:{gateway.port}",
            "PROXY_STATE_DIR": state_dir, **{name.upper(): str(value) for name, value in settings.items()},
        }  # fmt: skip
        rendered = subprocess.run(["bash", str(PROXY_CONF)], env=env, capture_output=True, text=True)
        assert rendered.returncode == 0, rendered.stderr
        conf = Path(state_dir) / "nginx.conf"
        conf.write_text(rendered.stdout)
        log = Path(state_dir) / "nginx.log"
        command = [nginx_binary(), "-p", state_dir, "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
        with open(log, "wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        started.append((process, state_dir))
        wait_for_port(port, process, log)
        return port, log

    yield start
    for process, state_dir in started:
        stop(process)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_the_pages_polls_are_not_logged_everything_else_is(edge):
    port, log = edge()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=10) as client:
        for _ in range(5):
            assert client.get("/v1/jobs", params={"limit": 5}).status_code == 200
            assert client.get("/v1/datasets").status_code == 200
        assert client.get("/v1/jobs/" + "0" * 32).status_code == 404  # an error: logged
        assert client.post("/v1/jobs/predict", json={}).status_code == 422  # not a poll: logged
    assert httpx.get(f"{base}/v1/jobs", timeout=10).status_code == 401  # no key: logged
    for _ in range(50):  # nginx writes the access log line after the response
        lines = [line for line in log.read_text(errors="replace").splitlines() if "HTTP/1.1" in line]
        if len(lines) >= 3:
            break
        time.sleep(0.1)
    assert not any('"GET /v1/jobs?limit=5' in line or '"GET /v1/datasets ' in line for line in lines), lines
    assert any(f'"GET /v1/jobs/{"0" * 32} HTTP/1.1" 404' in line for line in lines), lines
    assert any('"POST /v1/jobs/predict HTTP/1.1" 422' in line for line in lines), lines
    assert any('"GET /v1/jobs HTTP/1.1" 401' in line for line in lines), lines
