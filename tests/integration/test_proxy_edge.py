"""The edge (nginx with the project's config in front of a real gateway): what it logs, and what it reads before it
knows the caller (issue 31). Same set-up as test_proxy_limits.py; the proxy's own output is read back here."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.arena_rows import arena_csv
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


def bytes_sent_before_an_answer(port: int, headers: dict[str, str], body_bytes: int) -> tuple[int, bytes]:
    """Send a POST /v1/datasets of `body_bytes` in 16 KiB pieces, waiting up to 20 ms for an answer after each (a
    client at 800 KiB/s: what it has sent is what nginx could have read, not what sits in kernel buffers): (bytes
    of the body sent when the answer's first bytes arrived, the answer)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: edge\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {body_bytes}\r\n{head}\r\n"
    ).encode()
    piece = b"a" * 16384
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while sent < body_bytes:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                return sent, sock.recv(65536)
            try:
                sock.sendall(piece[: body_bytes - sent])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += min(len(piece), body_bytes - sent)
        return sent, sock.recv(65536)


@pytest.mark.parametrize("key", [None, "wrong-key"], ids=["no-key", "wrong-key"])
def test_an_upload_without_a_valid_key_gets_401_before_1_mib_is_read(edge, gateway, key):  # noqa: F811
    """nginx used to read (and spool) 8 MiB of a 100 MiB upload that carried no key before anyone answered."""
    port, log = edge(MAX_UPLOAD_BYTES=200 * 1024 * 1024)
    headers = {} if key is None else {"X-API-Key": key}
    posts_before = gateway.log.read_text(errors="replace").count('"POST /v1/datasets ')
    sent, answer = bytes_sent_before_an_answer(port, headers, 100 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"missing or wrong API key" in answer and b"WWW-Authenticate: Bearer" in answer
    assert sent < 1024 * 1024, f"{sent:,} bytes of the body were sent before the 401"
    print(f"401 after {sent:,} bytes of a 100 MiB body")  # the figure in docs/reliability.md
    spool = log.parent / "client_body"
    assert not spool.exists() or not any(spool.rglob("*")), "nginx spooled the body of a request without a key"
    posts = gateway.log.read_text(errors="replace").count('"POST /v1/datasets ')
    assert posts == posts_before, "the gateway got a request without a key"


def test_with_the_key_the_check_passes_and_the_gateway_answers(edge):
    port, _ = edge()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/v1/auth-check", headers={"X-API-Key": API_KEY}).status_code == 204
        assert client.get("/v1/auth-check", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 204
        assert client.get("/v1/jobs", headers={"X-API-Key": API_KEY}).status_code == 200
        refused = client.get("/v1/jobs", headers={"X-API-Key": "nope"})
        assert refused.status_code == 401 and "missing or wrong API key" in refused.json()["detail"]
        upload = client.post(
            "/v1/datasets", headers={"X-API-Key": API_KEY}, files={"file": ("pairs.csv", arena_csv(3), "text/csv")}
        )
        assert upload.status_code == 201, upload.text
