"""The whole path on real services: the real gateway app (TestClient), the real Redis, and real Celery
workers started as subprocesses of the worker environment, running the real small model.

Each module starts its workers once; everything lives under a temporary SHARED_DIR and a fresh Redis key
prefix, both removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.names import worker_queues
from shared.settings import REPO_ROOT, Settings
from tests.api.conftest import API_KEY, TEST_REDIS_URL, redis_or_fail

WORKER_PYTHON = REPO_ROOT / ".venv-worker" / "bin" / "python"
EMBEDDED_MODEL = REPO_ROOT / "var" / "shared" / "models" / "SmolLM2-135M-Instruct"
EMBEDDED_TEXT_ENCODER = REPO_ROOT / "var" / "shared" / "models" / "all-MiniLM-L6-v2"
# The default predictor `make setup` fits (a text model on ../shared/data): what a plain predict job uses.
DEFAULT_PREDICTOR = REPO_ROOT / "var" / "shared" / "models" / "default"
WORKER_START_TIMEOUT_S = 180


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class Stack:
    """A gateway client plus the workers this test module started."""

    def __init__(
        self,
        root: Path,
        *,
        engine: str,
        redis_url: str = TEST_REDIS_URL,
        worker_env: dict[str, str] | None = None,
        gateway_settings: dict | None = None,
    ) -> None:
        self.root = root
        self.engine = engine
        self.extra_worker_env = dict(worker_env or {})  # settings for the workers only (env vars)
        self.prefix = f"arena-it-{uuid.uuid4().hex[:12]}:"
        shared_dir = root / "shared"
        (shared_dir / "models").mkdir(parents=True)
        (shared_dir / "models" / EMBEDDED_MODEL.name).symlink_to(EMBEDDED_MODEL)
        (shared_dir / "models" / EMBEDDED_TEXT_ENCODER.name).symlink_to(EMBEDDED_TEXT_ENCODER)
        if DEFAULT_PREDICTOR.is_dir():  # copied: a predictor is resolved inside models/, links out are refused
            shutil.copytree(DEFAULT_PREDICTOR, shared_dir / "models" / DEFAULT_PREDICTOR.name)
        self.settings = Settings(
            SHARED_DIR=shared_dir,
            API_KEY=API_KEY,
            REDIS_URL=redis_url,
            REDIS_KEY_PREFIX=self.prefix,
            INSPECT_TIMEOUT_S=0.5,
            SCORE_TIMEOUT_S=120,
            _env_file=None,
            **(gateway_settings or {}),
        )
        self.client = TestClient(create_app(self.settings), headers={"Authorization": f"Bearer {API_KEY}"})
        self.workers: dict[str, subprocess.Popen] = {}

    def worker_env(self, queue: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            SHARED_DIR=str(self.settings.SHARED_DIR),
            REDIS_URL=self.settings.REDIS_URL,
            REDIS_KEY_PREFIX=self.prefix,
            JUDGE_ENGINE=self.engine,
            MAX_MODEL_LEN="1024",
            JUDGE_CHUNK_PAIRS="1",
            VLLM_CPU_KVCACHE_GIB="1",
            CHUNK_MAX_RETRIES="1",
            CHUNK_RETRY_DELAY_S="0.2",
            OMP_NUM_THREADS="1",
            # A fast sweeper: a killed worker counts as gone after 3 s, a record never sent is sent after 2 s.
            WORKER_HEARTBEAT_S="1",
            SWEEP_INTERVAL_S="1",
            DISPATCH_GRACE_S="2",
            # The stand-in "GPU" workers are CPU workers; a real one gets its GPU index here.
            CUDA_VISIBLE_DEVICES="",
        )
        env.update(self.extra_worker_env)
        env.pop("API_KEY", None)
        return env

    def start_worker(
        self, queue: str, *, env: dict[str, str] | None = None, host: str | None = None, name: str | None = None
    ) -> str:
        """Start a worker for `queue` (gpu.N also consumes the shared gpu queue, as in compose and `make up`), with
        `env` on top of the stack's worker settings, named NAME@`host` (this machine's host name by default, or
        another, standing in for a second machine); returns its name once it answers a ping."""
        name = name or f"{queue.replace('.', '')}-{uuid.uuid4().hex[:6]}@{host or socket.gethostname()}"
        process, log_path = self.spawn_worker(queue, name=name, env=env)
        self.workers[name] = process
        celery = self.client.app.state.celery
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"worker {name} exited with {process.returncode}:\n{tail(log_path)}")
            if celery.control.ping(destination=[name], timeout=0.5):
                return name
        pytest.fail(f"worker {name} did not answer within {WORKER_START_TIMEOUT_S}s:\n{tail(log_path)}")

    def spawn_worker(
        self, queue: str, *, name: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen, Path]:
        """The worker process (its own session) and its log file, without waiting for it."""
        log_path = self.root / f"worker-{queue}.log"
        if log_path.exists():  # a second worker on the same queue: its own log
            log_path = self.root / f"worker-{queue}-{uuid.uuid4().hex[:6]}.log"
        command = [
            str(WORKER_PYTHON), "-m", "celery", "-A", "workers.celery_app", "worker",
            "-Q", ",".join(worker_queues(queue)), "-n", name, "--pool=solo", "--concurrency=1", "-E",
            "--loglevel=INFO", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env={**self.worker_env(queue), **(env or {})}, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return process, log_path

    def log_tail(self, queue: str, lines: int = 40) -> str:
        path = self.root / f"worker-{queue}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # its own session: the worker and vLLM's engine process
        for process in self.workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.client.close()
        if self.settings.REDIS_URL == TEST_REDIS_URL:  # a test's own Redis is stopped by that test
            client = redis_or_fail(TEST_REDIS_URL)
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                client.delete(key)

    # --- REST helpers -------------------------------------------------------------------------------------

    def upload(self, content: bytes, name: str = "pairs.csv") -> dict:
        response = self.client.post("/v1/datasets", files={"file": (name, content, "text/csv")})
        assert response.status_code == 201, response.text
        return response.json()

    def predict(self, dataset_id: str, **options) -> str:
        """Submit a predict job. Without an adapter or calibration it asks for the raw votes: the job-mechanics
        tests run the LLM judge (the GPU path's CPU twin); test_default_predictor.py sends plain requests."""
        if "adapter" not in options and "calibration" not in options:
            options.setdefault("raw", True)
        response = self.client.post("/v1/jobs/predict", json={"dataset": dataset_id, **options})
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def wait(self, job_id: str, *, until, timeout: float = 300) -> dict:
        """Poll GET /v1/jobs/{id} until `until(job)` holds; fails with the job and worker logs otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if until(job):
                return job
            if time.monotonic() > deadline:
                logs = "\n".join(self.log_tail(queue) for queue in ("cpu", "gpu.0", "gpu.1"))
                pytest.fail(f"job {job_id} never got there; last record: {job}\n{logs}")
            time.sleep(0.25)

    def wait_finished(self, job_id: str, timeout: float = 300) -> dict:
        return self.wait(
            job_id, until=lambda job: job["state"] in ("succeeded", "failed", "cancelled"), timeout=timeout
        )


def make_stack(
    tmp_path_factory, *, engine: str, redis_url: str = TEST_REDIS_URL, worker_env=None, gateway_settings=None
):
    if not (EMBEDDED_MODEL / "config.json").is_file():
        pytest.fail(f"the embedded model is missing at {EMBEDDED_MODEL}; run `make setup`")
    if not WORKER_PYTHON.exists():
        pytest.fail(f"the worker environment is missing ({WORKER_PYTHON}); run `make setup`")
    redis_or_fail(redis_url)
    return Stack(
        tmp_path_factory.mktemp("stack"), engine=engine, redis_url=redis_url, worker_env=worker_env,
        gateway_settings=gateway_settings,
    )  # fmt: skip
