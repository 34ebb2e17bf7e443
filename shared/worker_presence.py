"""Which workers are alive and what they consume: each worker announces itself in Redis every heartbeat.

A solo-pool worker busy with a shard cannot answer Celery's `inspect` broadcast, so silence there means nothing.
The announcement comes from a thread of its own (workers/background.py) and keeps coming while the worker
judges; it expires after `Settings.worker_gone_s`, so a worker killed with -9 drops out by itself. The gateway
routes jobs by it and the sweeper takes a shard whose worker dropped out for dead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from shared.settings import Settings

PRESENCE_PREFIX = "arena:worker:"
SWEEPER_LOCK_NAME = "arena:sweeper:leader"


def redis_client(settings: Settings) -> redis.Redis:
    # Short timeouts: the gateway answers requests and the sweeper loops; neither may hang on a dead Redis.
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=settings.INSPECT_TIMEOUT_S + 2, socket_connect_timeout=2
    )


def presence_key(settings: Settings, worker: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{PRESENCE_PREFIX}{worker}"


@dataclass(frozen=True)
class Announcement:
    """What a live worker said about itself: the queues it consumes, and since when it has had no task (None: busy)."""

    queues: list[str]
    idle_since: float | None = None


def announce(
    client: redis.Redis, settings: Settings, worker: str, queues: list[str], *, idle_since: float | None = None
) -> None:
    """Say that `worker` is alive and consumes `queues` (idle since `idle_since`, or busy), for `worker_gone_s`."""
    body = json.dumps({"queues": sorted(queues), "seen": time.time(), "idle_since": idle_since})
    client.set(presence_key(settings, worker), body, px=int(settings.worker_gone_s * 1000))


def withdraw(client: redis.Redis, settings: Settings, worker: str) -> None:
    """A worker shutting down cleanly leaves at once instead of after `worker_gone_s`."""
    client.delete(presence_key(settings, worker))


def live_workers(client: redis.Redis, settings: Settings) -> dict[str, list[str]]:
    """Worker name → the queues it consumes, for every worker that announced itself recently.

    Raises:
        redis.RedisError: Redis does not answer.
    """
    return {name: announcement.queues for name, announcement in announcements(client, settings).items()}


def announcements(client: redis.Redis, settings: Settings) -> dict[str, Announcement]:
    """Worker name → its announcement, for every worker that announced itself recently.

    Raises:
        redis.RedisError: Redis does not answer.
    """
    prefix = presence_key(settings, "")
    keys = list(client.scan_iter(match=f"{_escape_glob(prefix)}*", count=500))
    if not keys:
        return {}
    found: dict[str, Announcement] = {}
    for key, body in zip(keys, client.mget(keys), strict=True):
        if body is None:  # expired between the scan and the read
            continue
        try:
            fields = json.loads(body)
            announcement = Announcement([str(queue) for queue in fields["queues"]], fields.get("idle_since"))
        except (ValueError, KeyError, TypeError):
            continue
        name = key.decode() if isinstance(key, bytes) else str(key)
        found[name[len(prefix) :]] = announcement
    return found


def _escape_glob(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
