"""A worker killed with -9 mid-chunk and started again under the same name (a restart loop, `make down && make up`,
compose's restart policy): the chunk its old process claimed is re-queued as soon as the new process announces
itself, because the claim names the process instance, not just the worker name. Before, the name looked alive, so
the chunk waited for its lease (LEASE_S, 15 min) and an assembly for ever."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # One worker, so the sweeper is the restarted process itself: it never saw the old one go silent, and only the
    # instance tells them apart. LEASE_S stays at its default (900 s): recovery must not come from the lease.
    stack = make_stack(tmp_path_factory, engine="transformers")
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
