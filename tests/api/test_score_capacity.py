"""A burst of score requests must not starve the gateway: a real uvicorn gateway, the real Redis, and a worker that
announces itself but never takes a task (busy), so every score request waits its full SCORE_TIMEOUT_S.

200 concurrent POST /v1/score: at most SCORE_MAX_IN_FLIGHT wait, the rest get 429 with Retry-After at once, and
GET /readyz and GET /v1/jobs keep answering in well under a second throughout (issue 20: p99 < 1 s). A gateway
that holds a thread per waiting score request (the sync route this replaced) fails both.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT, Settings
from shared.worker_presence import announce, redis_client
from tests.api.conftest import API_KEY

pytestmark = pytest.mark.slow

BURST = 200
MAX_IN_FLIGHT = 40
SCORE_TIMEOUT_S = 6.0
PAIR = {"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path):
    """A real uvicorn gateway on a free port, as scripts/stack.sh starts it; its port."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SHARED_DIR": str(settings.SHARED_DIR),
        "API_KEY": API_KEY,
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "INSPECT_TIMEOUT_S": "0.5",
        "SCORE_TIMEOUT_S": str(SCORE_TIMEOUT_S),
        "SCORE_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the gateway exited:\n{log_path.read_text()[-3000:]}"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the gateway did not listen within 60 s"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def busy_worker(settings: Settings):
    """A worker that says it consumes `cpu` (busy) but never takes a task: score tasks queue up unanswered."""
    client = redis_client(settings)
    stop = threading.Event()

    def keep_announcing() -> None:
        while not stop.is_set():
            announce(client, settings, "busy@test", ["cpu"], idle_since=None)
            stop.wait(1)

    thread = threading.Thread(target=keep_announcing, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


async def call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], float]:
    """One HTTP/1.1 request on a connection of its own: (status, headers, seconds). Raw asyncio streams, not an
    HTTP client library: 200 of them at once must cost this process little, the measurement is the gateway's."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    response = await reader.read()  # to the end: the gateway closes the connection after its answer
    seconds = time.perf_counter() - started
    writer.close()
    status_line, *header_lines = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, seconds


def probe(port: int, stop: threading.Event) -> dict[str, list[float]]:
    """GET /readyz and GET /v1/jobs in turn, each timed, until `stop`: from a thread of its own, so the time the
    burst's own event loop takes does not count."""
    latencies: dict[str, list[float]] = {"/readyz": [], "/v1/jobs": []}
    while not stop.is_set():
        for path, samples in latencies.items():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.perf_counter()
            connection.request("GET", path, headers={"X-API-Key": API_KEY})
            response = connection.getresponse()
            response.read()
            samples.append(time.perf_counter() - started)
            connection.close()
            assert response.status in (200, 503), (path, response.status)
        stop.wait(0.02)
    return latencies


async def burst(port: int) -> tuple[list[tuple[int, dict[str, str], float]], dict[str, list[float]]]:
    """BURST concurrent score requests; meanwhile GET /readyz and GET /v1/jobs in turn, timed, until all ended."""
    body = json.dumps({"pairs": [PAIR], "raw": True, "tta": False}).encode()
    stop = threading.Event()
    with ThreadPoolExecutor(1) as prober:
        scores = asyncio.gather(*(call(port, "POST", "/v1/score", body) for _ in range(BURST)))
        await asyncio.sleep(0.1)  # the burst is on its way
        latencies = prober.submit(probe, port, stop)
        try:
            results = await scores
        finally:
            stop.set()
        return results, latencies.result()


def test_a_burst_of_score_requests_gets_429s_at_once_and_the_other_routes_keep_answering(gateway, busy_worker):
    results, latencies = asyncio.run(burst(gateway))

    statuses = [status for status, _, _ in results]
    refused = [(headers, seconds) for status, headers, seconds in results if status == 429]
    assert set(statuses) <= {429, 504}, sorted(set(statuses))
    assert len(refused) >= BURST - MAX_IN_FLIGHT, f"{len(refused)} of {BURST} refused with 429"
    assert all(headers.get("retry-after", "").isdigit() for headers, _ in refused)
    slowest = max(seconds for _, seconds in refused)
    assert slowest < 2.0, f"a refusal took {slowest:.2f} s: it must come at once, not after a wait"
    # The ones let in waited their full SCORE_TIMEOUT_S for a worker that never came.
    assert statuses.count(504) <= MAX_IN_FLIGHT
    assert all(seconds >= SCORE_TIMEOUT_S - 0.5 for status, _, seconds in results if status == 504)

    for path, samples in latencies.items():
        assert len(samples) >= 10, (path, len(samples))
        p99 = percentile(samples, 0.99)
        assert p99 < 1.0, f"{path}: p99 {p99:.2f} s over {len(samples)} requests during the burst"


def test_health_answers_at_once_while_the_broker_check_hangs(settings, monkeypatch):
    """A broker check that hangs (a Redis that accepts connections but never answers) must not hang /readyz."""
    from fastapi.testclient import TestClient

    from api.dispatch import HEALTH_WAIT_S, WorkerDirectory
    from api.main import create_app

    release = threading.Event()

    def hanging_check(self) -> str:
        release.wait(10)
        return "ok"

    monkeypatch.setattr(WorkerDirectory, "broker_reachable", hanging_check)
    try:
        with TestClient(create_app(settings)) as client:
            for _ in range(3):
                started = time.perf_counter()
                health = client.get("/readyz")
                assert time.perf_counter() - started < HEALTH_WAIT_S + 0.5
                assert health.status_code == 503 and health.json()["broker"] == "unreachable"
    finally:
        release.set()


def test_health_says_the_broker_is_ok_while_a_worker_broadcast_is_slow(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from api.dispatch import HEALTH_WAIT_S, WorkerDirectory
    from api.main import create_app

    release = threading.Event()
    monkeypatch.setattr(WorkerDirectory, "active_queues", lambda self, fresh=False: release.wait(10) and {})
    try:
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            health = client.get("/readyz")
            assert time.perf_counter() - started < HEALTH_WAIT_S + 0.5
            assert health.status_code == 503 and health.json()["broker"] == "ok"
    finally:
        release.set()
