"""The sweep runs on a thread of its own: a slow pass never delays the heartbeat (workers/background.py)."""

from __future__ import annotations

import os
import threading
import time

import redis

from shared.settings import Settings
from shared.worker_presence import announcements
from workers.background import WorkerBackground

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def test_a_sweep_that_hangs_does_not_stop_the_heartbeats(tmp_path):
    prefix = f"sweep-thread-{os.getpid()}:"
    settings = Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix,
                        WORKER_HEARTBEAT_S=0.2, SWEEP_INTERVAL_S=0.1, _env_file=None)  # fmt: skip
    background = WorkerBackground(settings, worker="w1@host", queues=["cpu"], send=lambda message: None)
    release, swept = threading.Event(), threading.Event()

    def hanging_sweep() -> list[str]:
        swept.set()
        release.wait(10)
        return []

    background.sweeper.sweep = hanging_sweep
    client = redis.Redis.from_url(REDIS_URL)
    background.start()
    try:
        assert swept.wait(5), "the sweeper thread never swept"
        client.delete(*client.keys(f"{prefix}*"))  # forget the announcement: only a new beat can bring it back
        deadline = time.monotonic() + 5
        while "w1@host" not in announcements(client, settings) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "w1@host" in announcements(client, settings), "no heartbeat while a sweep was running"
    finally:
        release.set()
        background.stop()
        keys = client.keys(f"{prefix}*")
        if keys:
            client.delete(*keys)
