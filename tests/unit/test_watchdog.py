"""The worker's watchdog: a step stuck inside one chunk HARD_STOP_GRACE_S past its time limit fails its job with
the reason and stops the worker (here a recorded call instead of the process exit; tests/integration/test_faults.py
runs the real exit)."""

from __future__ import annotations

import pytest

from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord
from shared.settings import Settings
from workers.background import WorkerBackground
from workers.jobs import run as run_module
from workers.jobs.run import JobRun

JOB = "e" * 32


@pytest.fixture
def settings(tmp_path) -> Settings:
    # Redis unreachable on purpose: the watchdog must act without it (withdrawing the announcement is best effort).
    return Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, REDIS_URL="redis://127.0.0.1:1/0",
                    HARD_STOP_GRACE_S=30, _env_file=None)  # fmt: skip


def background(settings, stops: list) -> WorkerBackground:
    return WorkerBackground(settings, worker="w1@host", queues=["cpu"], send=lambda message: None,
                            hard_stop=lambda: stops.append(1))  # fmt: skip


def test_a_step_past_its_limit_plus_the_grace_is_failed_and_the_worker_stopped(settings, monkeypatch):
    store = JobStore(settings.SHARED_DIR)
    chunks = [ChunkRecord(index=0, queue="cpu", start=0, stop=4, task_id="t0")]
    store.create(JobRecord(id=JOB, kind="predict", params={"time_limit_s": 10}, chunks=chunks))
    stops: list = []
    with JobRun(settings, JOB, unit="rows", chunk_index=0, task_id="t0", worker="w1@host") as run:
        run.start()
        started = run.deadline - 10
        monkeypatch.setattr("time.time", lambda: started + 10 + 29)  # within the grace: leave it
        assert background(settings, stops).watchdog() is False and stops == []
        monkeypatch.setattr("time.time", lambda: started + 10 + 31)
        assert background(settings, stops).watchdog() is True and stops == [1]
    record = store.read(JOB)
    assert record.state == "failed" and record.chunks[0].state == "failed"
    assert "stopped hard" in record.error and "time limit of 10s" in record.error
    assert run_module.running_step() is None  # the step ended


def test_no_step_or_a_step_without_deadline_is_never_stopped(settings):
    stops: list = []
    assert background(settings, stops).watchdog() is False
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=JOB, kind="train", params={}, task_ids=["t0"]))
    with JobRun(settings, JOB, unit="steps", task_id="t0", worker="w1@host") as run:
        run.start(deadline=False)  # training keeps its own budget
        assert background(settings, stops).watchdog() is False
    assert stops == [] and store.read(JOB).state == "running"
