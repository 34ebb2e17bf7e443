"""Redis restarted mid-job: this test's own redis-server (append-only persistence, a free port, a temp folder; the
machine's shared Redis is never touched) is stopped while a chunk runs and a second job waits in the queue.

While it is down the gateway still serves job records (they live in shared storage) and refuses new jobs with a
clear 503; once Redis is back the gateway recovers by itself, and the running and the queued job both finish.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


class OwnRedis:
    """A redis-server with appendonly persistence in `folder`, stopped and started again on the same port."""

    def __init__(self, folder) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("this test starts its own redis-server: apt-get install -y redis-server")
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                   "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        pytest.fail(f"redis-server on port {self.port} did not start; see {self.folder / 'redis.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, own_redis):
    stack = make_stack(tmp_path_factory, engine="transformers", redis_url=own_redis.url)
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def test_jobs_survive_a_redis_restart_and_the_gateway_recovers(stack, own_redis):
    dataset = stack.upload(arena_csv(6, labelled=False))
    running_id = stack.predict(dataset["id"])
    queued_id = stack.predict(stack.upload(arena_csv(2))["id"])
    stack.wait(running_id, until=lambda job: job["progress"]["done"] >= 1)

    own_redis.stop()
    try:
        refused = stack.client.post("/v1/jobs/predict", json={"dataset": dataset["id"]})
        assert refused.status_code == 503, refused.text
        assert "job queue is unavailable" in refused.json()["detail"] and "Redis" in refused.json()["detail"]
        health = stack.client.get("/readyz")
        assert health.status_code == 503 and health.json()["broker"].startswith("unreachable")
        # Job records live in shared storage: still listed, with their states, while Redis is down.
        listed = {job["id"]: job["state"] for job in stack.client.get("/v1/jobs").json()}
        assert listed == {running_id: "running", queued_id: "dispatched"}  # sent, waiting for the busy worker
    finally:
        own_redis.start()

    key = {"Idempotency-Key": str(uuid.uuid4())}
    deadline = time.monotonic() + 60
    while (after := stack.client.post("/v1/jobs/predict", json={"dataset": dataset["id"]}, headers=key)).status_code \
            != 202 and time.monotonic() < deadline:  # fmt: skip
        time.sleep(1)
    assert after.status_code == 202, f"the gateway did not recover by itself: {after.status_code} {after.text}"

    for job_id, rows in [(running_id, 6), (queued_id, 2), (after.json()["job_id"], 6)]:
        job = stack.wait_finished(job_id, timeout=240)
        assert job["state"] == "succeeded", job
        assert job["progress"] == {"done": rows, "total": rows}
        submission = stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv")
        assert submission.status_code == 200 and submission.content.count(b"\n") == rows + 1
