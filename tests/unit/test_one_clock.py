"""Leases, heartbeats and deadlines on one clock (shared/clock.py: Redis' time): hosts whose own clocks are 10 minutes
apart write and judge them alike. Each test plays two hosts in one process by skewing `shared.clock.local_time` and
measuring the offset against a real Redis, as each worker does at every heartbeat."""

from __future__ import annotations

import os
import time

import pytest
import redis

from shared import clock
from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord, utc_now
from shared.settings import Settings
from shared.worker_presence import Announcement
from workers.jobs.run import JobRun
from workers.sweeper import Sweeper

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
JOB = "e" * 32
TEN_MINUTES = 600.0


@pytest.fixture
def client():
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail(f"no Redis at {TEST_REDIS_URL}: start redis-server or set TEST_REDIS_URL")
    yield client
    clock.reset()
    client.close()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        SHARED_DIR=tmp_path / "shared", API_KEY=None, WORKER_HEARTBEAT_S=1, DISPATCH_GRACE_S=5, LEASE_S=60,
        _env_file=None,
    )  # fmt: skip


def host(monkeypatch, client: redis.Redis | None, skew_s: float) -> None:
    """Become a host whose own clock is `skew_s` off; with a client, measure the offset as a heartbeat does."""
    clock.reset()
    monkeypatch.setattr(clock, "local_time", lambda: time.time() + skew_s)
    if client is not None:
        clock.sync(client)


def predict_record(store: JobStore, *, chunks: int = 1, time_limit_s: int | None = None) -> None:
    record = JobRecord(
        id=JOB, kind="predict", params={"time_limit_s": time_limit_s} if time_limit_s else {},
        chunks=[ChunkRecord(index=i, queue="cpu", start=i, stop=i + 1, task_id=f"t{i}") for i in range(chunks)],
    )  # fmt: skip
    record.task_ids = [chunk.task_id for chunk in record.chunks]
    store.create(record)
    store.mark_sent(JOB, task_ids=record.task_ids)


def sweeper(settings: Settings, *, idle_since: float | None = None) -> Sweeper:
    return Sweeper(
        settings, send=lambda message: None, announcements=lambda: {"w1@host": Announcement(["cpu"], idle_since)}
    )


def test_the_offset_to_redis_cancels_this_hosts_own_skew(monkeypatch, client):
    host(monkeypatch, client, +TEN_MINUTES)
    assert clock.offset() == pytest.approx(-TEN_MINUTES, abs=2)
    assert clock.now() == pytest.approx(time.time(), abs=2)
    assert utc_now().timestamp() == pytest.approx(time.time(), abs=2)


@pytest.mark.parametrize("worker_skew", [-TEN_MINUTES, +TEN_MINUTES])
def test_a_worker_whose_clock_is_ten_minutes_off_does_not_make_the_sweeper_misjudge_its_lease(
    monkeypatch, client, settings, worker_skew
):
    store = JobStore(settings.SHARED_DIR)
    predict_record(store)
    host(monkeypatch, client, worker_skew)  # the worker takes the chunk and its lease (LEASE_S=60)
    with JobRun(settings, JOB, unit="rows", chunk_index=0, task_id="t0", worker="w1@host") as run:
        run.start()
    host(monkeypatch, client, 0.0)  # the sweeper, on a host with a right clock
    assert sweeper(settings).sweep() == []  # not expired, though the worker's own clock is 10 min off
    # And it does expire, LEASE_S later on the one clock, when the worker stops renewing it.
    monkeypatch.setattr(clock, "local_time", lambda: time.time() + 61)
    [action] = sweeper(settings).sweep()
    assert "lease expired" in action


def test_without_the_one_clock_the_same_skew_expires_a_live_lease(monkeypatch, settings):
    """What the one clock prevents: each host on its own wall clock."""
    store = JobStore(settings.SHARED_DIR)
    predict_record(store)
    host(monkeypatch, None, -TEN_MINUTES)
    with JobRun(settings, JOB, unit="rows", chunk_index=0, task_id="t0", worker="w1@host") as run:
        run.start()
    host(monkeypatch, None, 0.0)
    [action] = sweeper(settings).sweep()
    assert "lease expired" in action


def test_a_jobs_deadline_set_by_a_slow_host_does_not_stop_its_chunks_on_a_right_one(monkeypatch, client, settings):
    store = JobStore(settings.SHARED_DIR)
    predict_record(store, chunks=2, time_limit_s=300)
    host(monkeypatch, client, -TEN_MINUTES)  # the first chunk's worker fixes the job's start (started_at)
    with JobRun(settings, JOB, unit="rows", chunk_index=0, task_id="t0", worker="w1@host") as run:
        run.start()
    host(monkeypatch, client, 0.0)  # the second chunk's worker checks the shared deadline
    with JobRun(settings, JOB, unit="rows", chunk_index=1, task_id="t1", worker="w2@host") as run:
        run.start()
        run.report(1, 1)  # within the 300 s limit: no JobCancelledError
    assert store.read(JOB).state == "running"


def test_an_idle_worker_with_a_slow_clock_does_not_make_a_fresh_task_look_lost(monkeypatch, client, settings):
    store = JobStore(settings.SHARED_DIR)
    host(monkeypatch, client, 0.0)  # the gateway sends the task
    predict_record(store)
    host(monkeypatch, client, -TEN_MINUTES)  # the worker announces itself idle since now, on its slow clock
    idle_since = clock.now()
    host(monkeypatch, client, 0.0)  # the sweeper
    sent: list = []
    one = Sweeper(settings, send=sent.append, announcements=lambda: {"w1@host": Announcement(["cpu"], idle_since)})
    assert one.sweep() == [] and sent == []  # sent and idle for less than DISPATCH_GRACE_S: not lost
