"""The reverse proxy (nginx with the project's config, compose/proxy-conf.sh) in front of a real gateway process,
probed with raw sockets: slow headers and slow bodies are cut off, a client over its connection cap gets 503 while
/healthz still answers, a burst over the rate limit gets 429, an over-size body gets 413 from the proxy itself.

The limits come from the same template compose and `make up` use; only the numbers are small so this runs in
seconds. nginx is required: `make setup` installs it (as root; CI runs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from shared.settings import REPO_ROOT
from tests.api.conftest import API_KEY, TEST_REDIS_URL, redis_or_fail
from tests.integration.nginx import free_port, nginx_binary, stop, wait_for_port

PROXY_CONF = REPO_ROOT / "compose" / "proxy-conf.sh"
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
MAX_REQUEST_BYTES = 4096
MAX_UPLOAD_BYTES = 256 * 1024
MARGIN_S = 3.0  # a generous bound on top of a timeout: nginx checks timers every few hundred ms


class Gateway:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def saw(self, path: str) -> bool:
        """Whether the gateway's access log has a request for `path`."""
        return f" {path} HTTP/1.1" in self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    redis_or_fail(TEST_REDIS_URL)
    root = tmp_path_factory.mktemp("gateway")
    port, log = free_port(), root / "gateway.log"
    prefix = f"arena-proxy-{uuid.uuid4().hex[:12]}:"
    env = {
        **os.environ, "PYTHONPATH": str(REPO_ROOT), "API_KEY": API_KEY, "SHARED_DIR": str(root / "shared"),
        "REDIS_URL": TEST_REDIS_URL, "REDIS_KEY_PREFIX": prefix, "INSPECT_TIMEOUT_S": "0.5",
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES), "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }  # fmt: skip
    command = [
        str(REPO_ROOT / ".venv-api" / "bin" / "python"), "-m", "uvicorn", "--factory", "api.main:create_app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, log)
        yield Gateway(port, log)
    finally:
        stop(process)
        client = redis_or_fail(TEST_REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


@pytest.fixture
def proxy(gateway) -> Iterator[Callable[..., int]]:
    """start(**limits) -> the port of an nginx with the project's config in front of the gateway."""
    started: list[tuple[subprocess.Popen, str]] = []

    def start(**limits: int) -> int:
        # Not under pytest's tmp_path (mode 700): nginx's workers run as nobody when the test runs as root.
        state_dir = tempfile.mkdtemp(prefix="arena-proxy-")
        os.chmod(state_dir, 0o755)
        port = free_port()
        env = {
            **os.environ, "PROXY_LISTEN": f"127.0.0.1:{port}", "PROXY_UPSTREAM": f"127.0.0.1:{gateway.port}",
            "PROXY_STATE_DIR": state_dir, "PROXY_CLIENT_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "PROXY_CLIENT_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        }  # fmt: skip
        env.update({name.upper(): str(value) for name, value in limits.items()})
        conf = Path(state_dir) / "nginx.conf"
        rendered = subprocess.run(["bash", str(PROXY_CONF)], env=env, capture_output=True, text=True)
        assert rendered.returncode == 0, rendered.stderr
        conf.write_text(rendered.stdout)
        log = Path(state_dir) / "nginx.log"
        command = [nginx_binary(), "-p", state_dir, "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
        with open(log, "wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        started.append((process, state_dir))
        wait_for_port(port, process, log)
        return port

    yield start
    for process, state_dir in started:
        stop(process)
        shutil.rmtree(state_dir, ignore_errors=True)


def until_closed(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the peer closes (or resets) the connection, and what it sent before; fails past limit_s."""
    started, received = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    else:
        pytest.fail(f"still open after {limit_s}s (received {received[:200]!r})")
    return time.monotonic() - started, received


def test_a_client_that_stops_in_the_middle_of_its_headers_is_disconnected(proxy):
    port = proxy()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: arena\r\nUser-Agent: slow")  # ... and nothing more
        elapsed, _ = until_closed(sock, HEADER_TIMEOUT_S + MARGIN_S)
    assert elapsed >= HEADER_TIMEOUT_S - 0.5  # it was the header timeout, not something else


def test_a_client_that_sends_its_body_slowly_is_cut_off_before_the_gateway_sees_it(proxy, gateway):
    port = proxy()
    head = (
        f"POST /v1/score?probe=slow-body HTTP/1.1\r\nHost: arena\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + b'{"pairs": [')  # then stalls, far short of its 2000 bytes
        elapsed, _ = until_closed(sock, BODY_TIMEOUT_S + MARGIN_S)
    assert elapsed >= BODY_TIMEOUT_S - 0.5
    assert not gateway.saw(
        "/v1/score?probe=slow-body"
    )  # the proxy buffers the body: a slow upload never holds the gateway


def test_past_its_connection_cap_a_client_gets_503_while_healthz_still_answers(proxy):
    cap = 4
    port = proxy(proxy_conn_per_client=cap, proxy_rate_per_client=100, proxy_post_rate_per_client=100)
    head = b"POST /v1/score HTTP/1.1\r\nHost: arena\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(cap)]
    try:
        for sock in held:  # each request stays in progress: the proxy waits for the 100 bytes it was promised
            sock.sendall(head)
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.sendall(head)
            _, answer = until_closed(extra, 5)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"503", answer[:300]
        assert b"Retry-After: 5" in rest and b"proxy limit: 4 per address" in rest

        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert health.status_code == 200 and health.json() == {"status": "ok"}, health.text  # the gateway's answer
    finally:
        for sock in held:
            sock.close()


def burst(port: int, method: str, path: str, count: int, **kwargs) -> tuple[list[httpx.Response], float]:
    """`count` requests sent at once from as many threads (the proxy decides on arrival, however slow the gateway)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=count) as pool:
            responses = list(pool.map(lambda _: client.request(method, path, **kwargs), range(count)))
        return responses, time.monotonic() - started


def test_a_burst_over_the_rate_limit_gets_429(proxy):
    rate, post_rate = 5, 1
    port = proxy(proxy_rate_per_client=rate, proxy_post_rate_per_client=post_rate)
    responses, elapsed = burst(port, "GET", "/v1/adapters", 30)
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 429}, statuses
    # The bucket: the burst (four times the rate; the second half delayed to the rate) and the first request, plus
    # `rate` a second while the burst lasts.
    assert 4 * rate + 1 <= statuses.count(200) <= 4 * rate + 1 + rate * elapsed + 1, (statuses, elapsed)
    refused = next(response for response in responses if response.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and "proxy limit: 5/s" in refused.json()["detail"]

    # POSTs (score, jobs, uploads) have their own, stricter bucket: the exhausted read bucket does not touch it, and
    # a flood of POSTs leaves the client's reads (job polling) alone.
    responses, elapsed = burst(port, "POST", "/v1/score", 10, json={"pairs": []})
    passed = [response.status_code for response in responses if response.status_code != 429]
    assert 4 * post_rate + 1 <= len(passed) <= 4 * post_rate + 1 + post_rate * elapsed + 1, (passed, elapsed)
    assert 429 not in passed and 413 not in passed  # the gateway's own answers (422: no pairs)


def test_a_client_sending_one_request_after_another_is_slowed_never_refused(proxy):
    rate = 5
    port = proxy(proxy_rate_per_client=rate, proxy_post_rate_per_client=1)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    count = 8 * rate  # twice the bucket: nodelay would refuse the second half
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        started = time.monotonic()
        statuses = [client.get("/v1/adapters").status_code for _ in range(count)]
        elapsed = time.monotonic() - started
    assert statuses == [200] * count, statuses
    # Slowed: past the first 2 x rate, one request per 1/rate seconds.
    assert elapsed >= (count - 2 * rate - 1) / rate * 0.8, elapsed


def test_an_over_size_body_gets_413_from_the_proxy_and_uploads_have_their_own_cap(proxy, gateway):
    port = proxy()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
        json_body = {"Content-Type": "application/json"}
        too_big = client.post(
            "/v1/jobs/predict?probe=oversize", content=b"x" * (MAX_REQUEST_BYTES + 1), headers=json_body
        )
        assert too_big.status_code == 413 and "proxy cap" in too_big.json()["detail"], too_big.text
        assert not gateway.saw("/v1/jobs/predict?probe=oversize")

        # An upload larger than MAX_REQUEST_BYTES (and than nginx's in-memory buffer: spooled to disk) reaches the
        # gateway, which answers for itself; one over MAX_UPLOAD_BYTES + the multipart envelope does not.
        csv = b"id,prompt,response_a,response_b\n" + b"1,x,y,z\n" * (200 * 1024 // 8)
        upload = client.post("/v1/datasets", files={"file": ("pairs.csv", csv, "text/csv")})
        assert upload.status_code not in (413, 500, 502, 503), upload.text
        assert gateway.saw("/v1/datasets")
        over = client.post("/v1/datasets", content=b"x" * (MAX_UPLOAD_BYTES + 65536 + 1))
        assert over.status_code == 413 and "proxy cap" in over.json()["detail"]
