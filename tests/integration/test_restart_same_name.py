"""A worker killed with -9 mid-chunk or mid-assembly and started again under the same name (a restart loop, `make down
&& make up`, compose's restart policy): the chunk or assembly its old process claimed is re-queued as soon as the new
process announces itself, because the claim names the process instance, not just the worker name. Before, the name
looked alive, so the chunk waited for its lease (LEASE_S, 15 min) and an assembly for ever."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from shared.worker_presence import announcements
from tests.api.arena_rows import arena_csv
from tests.api.conftest import redis_or_fail
from tests.integration.conftest import make_stack

# On a worker's PYTHONPATH: it claims the assembly of the job whose last chunk it ran, then kills itself with -9.
DIES_ASSEMBLING = Path(__file__).parent / "worker_dies_assembling"

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # One worker, so the sweeper is the restarted process itself: it never saw the old one go silent, and only the
    # instance tells them apart. LEASE_S stays at its default (900 s): recovery must not come from the lease.
    stack = make_stack(tmp_path_factory, engine="transformers")
    yield stack
    stack.stop()


@pytest.fixture
def two_chunk_stack(tmp_path_factory):
    # A stack of its own (its own key prefix, so its own queues: the other test's worker never takes these tasks),
    # with chunks of 3 rows, so the assembly concatenates chunks. LEASE_S at its default (900 s) again.
    stack = make_stack(tmp_path_factory, engine="transformers", gateway_settings={"PREDICT_CHUNK_ROWS": 3})
    yield stack
    stack.stop()


def test_a_worker_killed_mid_chunk_and_back_under_its_name_gets_the_chunk_again_at_once(stack):
    name = f"cpu-same@{socket.gethostname()}"
    stack.start_worker("cpu", name=name)
    dataset = stack.upload(arena_csv(4, labelled=False))
    job_id = stack.predict(dataset["id"])
    running = stack.wait(
        job_id, until=lambda job: job["chunks"][0]["state"] == "running" and job["progress"]["done"] >= 1
    )
    assert running["chunks"][0]["worker"] == name
    os.kill(stack.workers[name].pid, signal.SIGKILL)  # mid-chunk: no ack, no clean-up, its claim stays
    stack.workers[name].wait()
    killed_at = time.monotonic()
    stack.start_worker("cpu", name=name)  # the same name, a new process instance

    job = stack.wait_finished(job_id, timeout=120)
    assert job["state"] == "succeeded", job
    [chunk] = job["chunks"]
    assert chunk["attempts"] == 2 and chunk["worker"] == name
    assert time.monotonic() - killed_at < 60  # the restart's start and one sweep, far below LEASE_S
    # Re-queued because the instance changed, not because the name went silent (the sweeper logs why).
    logs = "".join(path.read_text(errors="replace") for path in stack.root.glob("worker-*.log"))
    assert f"chunk 0: re-queued on cpu, its worker {name} restarted" in logs


def test_a_worker_killed_mid_assembly_and_back_under_its_name_gets_the_assembly_sent_again(two_chunk_stack):
    # Assembly takes a moment, too short to hit with a kill from outside: the worker kills itself instead, at the
    # first step after its real claim (sitecustomize in DIES_ASSEMBLING). What it leaves is what a kill -9 there
    # leaves: the record `assembling` with assembler = this name and the dead process's instance, every chunk
    # published, the last chunk's message unacknowledged (redelivered only after the visibility timeout,
    # JOB_TIME_LIMIT_S + 1 h), no submission. Only the sweeper can recover it, and only by seeing that the name came
    # back under another instance: without that check (WorkerLiveness.why_dead) the name looks alive, the assembly
    # has no lease, and the job stays `assembling` for ever, so the wait below fails (checked with that branch
    # disabled). The restarted worker taking over its predecessor's claim itself (claim_assembly) needs the
    # redelivered message, an hour away: tests/unit covers it.
    stack = two_chunk_stack
    name = f"cpu-assembler@{socket.gethostname()}"
    stack.start_worker("cpu", name=name, env={"PYTHONPATH": f"{DIES_ASSEMBLING}:{REPO_ROOT}"})
    rows = 6
    dataset = stack.upload(arena_csv(rows, labelled=False))
    job_id = stack.predict(dataset["id"])
    dead = stack.workers[name]
    try:
        dead.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker never reached the assembly; job: {stack.client.get(f'/v1/jobs/{job_id}').json()}")
    assert dead.returncode == -signal.SIGKILL, stack.log_tail("cpu")

    left = stack.client.get(f"/v1/jobs/{job_id}").json()
    assert left["state"] == "assembling" and left["assembler"] == name, left
    assert left["assembler_instance"] is not None, left
    assert len(left["chunks"]) == 2 and all(chunk["state"] == "succeeded" for chunk in left["chunks"]), left
    assert stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").status_code == 404
    dead_instance = left["assembler_instance"]

    stack.start_worker("cpu", name=name)  # the same name, a new process instance, no sabotage
    announced = announcements(redis_or_fail(stack.settings.REDIS_URL), stack.settings)[name]
    assert announced.identity is not None and announced.identity.instance != dead_instance

    # Far below LEASE_S (900 s, the default here): the restart's first sweeps, then one assembly.
    job = stack.wait_finished(job_id, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["assembler"] == name and job["assembler_instance"] == announced.identity.instance, job
    assert all(chunk["attempts"] == 1 for chunk in job["chunks"]), job  # the assembly was sent again, not the chunks
    submission = stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv")
    assert submission.status_code == 200, submission.text
    ids = [row["id"] for row in csv.DictReader(io.StringIO(submission.text))]
    assert ids == [str(1000 + index) for index in range(rows)]  # every row once, in order
    logs = "".join(path.read_text(errors="replace") for path in stack.root.glob("worker-*.log"))
    assert f"job {job_id}: every chunk succeeded but no live worker assembles it; sent its assembly" in logs
