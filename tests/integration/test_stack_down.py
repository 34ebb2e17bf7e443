"""`make down` stops every process `make up` started, even a worker stuck inside a task, and `make down && make up`
mid-job loses no row and judges none twice.

The real `scripts/stack.sh up` (proxy, gateway, Flower, one CPU worker; the test's Redis and key prefix, free ports, a
temporary RUN_DIR), a predict job on the LLM judge that keeps the worker busy for minutes, then `scripts/stack.sh down`
while the chunk runs. On TERM the restart loop (bash) dies at once, but Celery's warm shutdown waits for the task:
`down` must wait for every process of each session it started and KILL what is left after STACK_STOP_GRACE_S.
(`make up` is `make setup`, then `stack.sh up`; `make down` is `stack.sh down`.)"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.settings import REPO_ROOT
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY, TEST_REDIS_URL, redis_or_fail
from tests.integration.conftest import EMBEDDED_MODEL, WORKER_PYTHON
from tests.integration.nginx import free_port, nginx_binary

STACK = REPO_ROOT / "scripts" / "stack.sh"
STOP_GRACE_S = 5


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is `sid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class NativeStack:
    def __init__(self, run_dir: Path, env: dict[str, str], api_port: int) -> None:
        self.run_dir = run_dir
        self.env = env
        self.started: dict[str, int] = {}
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def run(self, action: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(STACK), action], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def sessions(self) -> dict[str, int]:
        """The sessions `up` started, by name (its pid files); remembered for the clean-up, which `down` may not do."""
        found = {path.stem: int(path.read_text()) for path in self.run_dir.glob("*.pid")}
        self.started.update(found)
        return found

    def log(self, name: str, chars: int = 3000) -> str:
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture
def native_stack() -> Iterator[NativeStack]:
    nginx_binary()
    if not WORKER_PYTHON.exists() or not (EMBEDDED_MODEL / "config.json").is_file():
        pytest.fail("the worker environment or the embedded model is missing; run `make setup`")
    redis_or_fail(TEST_REDIS_URL)
    # Mode 700, like a home folder: run as root, nginx's workers (nobody by default) could not spool an upload under
    # RUN_DIR; stack.sh keeps them root then.
    root = Path(tempfile.mkdtemp(prefix="arena-stack-"))
    shared_dir = root / "shared"
    (shared_dir / "models").mkdir(parents=True)
    (shared_dir / "models" / EMBEDDED_MODEL.name).symlink_to(EMBEDDED_MODEL)
    prefix = f"arena-down-{uuid.uuid4().hex[:12]}:"
    api_port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("PROXY_", "STACK_"))},
        "RUN_DIR": str(root / "run"), "API_HOST": "127.0.0.1", "API_PORT": str(api_port),
        "API_INTERNAL_PORT": str(free_port()), "FLOWER_PORT": str(free_port()), "API_KEY": API_KEY,
        "REDIS_URL": TEST_REDIS_URL, "REDIS_KEY_PREFIX": prefix, "SHARED_DIR": str(shared_dir),
        "STACK_WORKERS": "cpu", "STACK_STOP_GRACE_S": str(STOP_GRACE_S), "READY_TIMEOUT_S": "240",
        "INSPECT_TIMEOUT_S": "0.5", "JUDGE_ENGINE": "transformers", "MAX_MODEL_LEN": "1024",
        "JUDGE_CHUNK_PAIRS": "1", "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    stack = NativeStack(root / "run", env, api_port)
    try:
        yield stack
    finally:
        stack.client.close()
        stack.sessions()
        if any(session_members(sid) for sid in stack.started.values()):
            stack.run("down", timeout=120)
        for sid in stack.started.values():  # whatever still runs: never left behind by a failed test
            for pid in session_members(sid):
                os.kill(pid, signal.SIGKILL)
        client = redis_or_fail(TEST_REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        shutil.rmtree(root, ignore_errors=True)


def test_down_stops_every_process_up_started_even_a_worker_inside_a_task(native_stack):
    up = native_stack.run("up", timeout=300)
    assert up.returncode == 0, f"{up.stderr}\n{native_stack.log('worker-cpu')}\n{native_stack.log('api')}"
    sessions = native_stack.sessions()
    assert set(sessions) == {"proxy", "api", "flower", "worker-cpu"}, sessions  # Redis was reused
    assert any("nginx" in command_line(pid) for pid in session_members(sessions["proxy"]))
    conf = (native_stack.run_dir / "proxy" / "nginx.conf").read_text()  # the template compose uses, with the settings
    assert "client_header_timeout 5s;" in conf and "limit_req_status 429;" in conf
    assert f"proxy_pass http://127.0.0.1:{native_stack.env['API_INTERNAL_PORT']};" in conf
    # The gateway is behind the proxy: the public port answers with the proxy's limits in front.
    assert native_stack.client.get("/healthz").status_code == 200

    dataset = arena_csv(2500, labelled=False)
    # Past nginx's in-memory body buffer (128 KiB, and a quarter more for a body of known length): nginx spools it
    # to a file under RUN_DIR before the gateway sees it.
    assert len(dataset) > 160 * 1024
    upload = native_stack.client.post("/v1/datasets", files={"file": ("pairs.csv", dataset)})
    assert upload.status_code == 201, upload.text
    submitted = native_stack.client.post("/v1/jobs/predict", json={"dataset": upload.json()["id"], "raw": True})
    assert submitted.status_code == 202, submitted.text
    job_url = f"/v1/jobs/{submitted.json()['job_id']}"
    deadline = time.monotonic() + 240
    while True:  # the worker is inside the chunk: it has judged a pair and has many left
        job = native_stack.client.get(job_url).json()
        if job["state"] == "running" and job["progress"]["done"] >= 1:
            break
        assert job["state"] in ("queued", "dispatched", "running"), job
        assert time.monotonic() < deadline, f"{job}\n{native_stack.log('worker-cpu')}"
        time.sleep(0.5)
    assert job["progress"]["done"] < job["progress"]["total"]
    worker_pids = session_members(sessions["worker-cpu"])
    assert any("celery" in command_line(pid) for pid in worker_pids), [command_line(pid) for pid in worker_pids]

    started = time.monotonic()
    down = native_stack.run("down", timeout=120)
    elapsed = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    left = {name: session_members(sid) for name, sid in sessions.items()}
    assert not any(left.values()), (left, down.stderr)
    assert "worker-cpu: " in down.stderr and "killing them" in down.stderr, down.stderr  # it was stuck in its task
    assert elapsed < STOP_GRACE_S + 30, down.stderr
    assert not list(native_stack.run_dir.glob("*.pid"))
    with socket.socket() as probe:  # nothing listens on the public port any more
        assert probe.connect_ex(("127.0.0.1", int(native_stack.env["API_PORT"]))) != 0


def test_down_and_up_mid_job_loses_no_row_and_judges_none_twice(native_stack):
    # Chunks of 2 rows, each followed by 12 s "on a slow device" (CHUNK_EXTRA_DELAY_S): a chunk caught as it starts
    # outlasts `down`'s grace (5 s), so the worker is killed inside it. A fast sweeper, as in the other integration
    # tests; LEASE_S stays at 900 s: the killed chunk must come back because `up` starts cpu@HOST again under another
    # process instance (the sweeper sees the restart), not because of its lease.
    rows = 6
    native_stack.env.update(
        PREDICT_CHUNK_ROWS="2", CHUNK_EXTRA_DELAY_S="12", WORKER_HEARTBEAT_S="1", SWEEP_INTERVAL_S="1"
    )
    up = native_stack.run("up", timeout=300)
    assert up.returncode == 0, f"{up.stderr}\n{native_stack.log('worker-cpu')}\n{native_stack.log('api')}"
    native_stack.sessions()
    upload = native_stack.client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(rows, labelled=False))})
    assert upload.status_code == 201, upload.text
    submitted = native_stack.client.post("/v1/jobs/predict", json={"dataset": upload.json()["id"], "raw": True})
    assert submitted.status_code == 202, submitted.text
    job_url = f"/v1/jobs/{submitted.json()['job_id']}"

    def job_until(done, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = native_stack.client.get(job_url).json()
            if done(job):
                return job
            assert time.monotonic() < deadline, f"{job}\n{native_stack.log('worker-cpu', 6000)}"
            time.sleep(0.25)

    # Mid-job: the first chunk published, the second just started, the third still queued.
    job = job_until(lambda job: [chunk["state"] for chunk in job["chunks"]][:2] == ["succeeded", "running"], 240)
    assert len(job["chunks"]) == 3 and job["chunks"][2]["state"] == "queued", job

    down = native_stack.run("down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert "worker-cpu: " in down.stderr and "killing them" in down.stderr, down.stderr  # killed inside chunk 1
    up = native_stack.run("up", timeout=300)
    assert up.returncode == 0, f"{up.stderr}\n{native_stack.log('worker-cpu')}"
    native_stack.sessions()

    job = job_until(lambda job: job["state"] in ("succeeded", "failed", "cancelled"), 240)
    assert job["state"] == "succeeded", job
    # Nothing judged twice: only the killed chunk ran again; nothing lost: every row once, in order.
    assert [chunk["attempts"] for chunk in job["chunks"]] == [1, 2, 1], job
    submission = native_stack.client.get(f"{job_url}/artifacts/submission.csv")
    assert submission.status_code == 200, submission.text
    ids = [row["id"] for row in csv.DictReader(io.StringIO(submission.text))]
    assert ids == [str(1000 + index) for index in range(rows)]
    worker = job["chunks"][1]["worker"]
    assert f"chunk 1: re-queued on cpu, its worker {worker} restarted" in native_stack.log("worker-cpu", 10**6)
