"""Which workers are alive and what they consume: each worker announces itself in Redis every heartbeat.

A solo-pool worker busy with a chunk cannot answer Celery's `inspect` broadcast, so silence there means nothing.
The announcement comes from a thread of its own (workers/background.py) and keeps coming while the worker
judges; it expires after `Settings.worker_gone_s`, so a worker killed with -9 drops out by itself. The gateway
routes jobs by it and the sweeper takes a chunk whose worker dropped out for dead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from shared import clock
from shared.settings import Settings

PRESENCE_PREFIX = "arena:worker:"  # + the worker's name: its announcement, expiring
PRESENCE_NAMES = "arena:workers"  # the set of names that announced themselves (expired ones are pruned on read)
SWEEPER_LOCK_NAME = "arena:sweeper:leader"


def redis_client(settings: Settings) -> redis.Redis:
    # Short timeouts: the gateway answers requests and the sweeper loops; neither may hang on a dead Redis.
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=settings.INSPECT_TIMEOUT_S + 2, socket_connect_timeout=2
    )


def presence_key(settings: Settings, worker: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{PRESENCE_PREFIX}{worker}"


@dataclass(frozen=True)
class WorkerIdentity:
    """Which process announces a worker name, and which shared storage it sees (workers/identity.py checks both).

    `pid_space` names the machine and PID namespace (boot id + namespace): within one, `pid` says whether the
    process is still alive; across them (another host, another container) only its announcements do.
    """

    instance: str
    pid_space: str
    pid: int
    storage: str


@dataclass(frozen=True)
class Announcement:
    """What a live worker said about itself: the queues it consumes, and since when it has had no task (None: busy)."""

    queues: list[str]
    idle_since: float | None = None
    seen: float | None = None
    identity: WorkerIdentity | None = None


def announcement_body(queues: list[str], *, idle_since: float | None, identity: WorkerIdentity | None) -> str:
    fields: dict = {"queues": sorted(queues), "seen": clock.now(), "idle_since": idle_since}
    if identity is not None:
        fields["identity"] = asdict(identity)
    return json.dumps(fields)


def parse_announcement(body: bytes | str) -> Announcement:
    """Raises ValueError, KeyError or TypeError on a body that is not an announcement."""
    fields = json.loads(body)
    identity = fields.get("identity")
    return Announcement(
        queues=[str(queue) for queue in fields["queues"]],
        idle_since=fields.get("idle_since"),
        seen=fields.get("seen"),
        identity=WorkerIdentity(**identity) if identity else None,
    )


def announce(
    client: redis.Redis,
    settings: Settings,
    worker: str,
    queues: list[str],
    *,
    idle_since: float | None = None,
    identity: WorkerIdentity | None = None,
) -> None:
    """Say that `worker` is alive and consumes `queues` (idle since `idle_since`, or busy), for `worker_gone_s`."""
    body = announcement_body(queues, idle_since=idle_since, identity=identity)
    with client.pipeline() as pipe:  # one expiring key per worker, and its name in the set readers start from
        pipe.set(presence_key(settings, worker), body, px=int(settings.worker_gone_s * 1000))
        pipe.sadd(names_key(settings), worker)
        pipe.execute()


def withdraw(client: redis.Redis, settings: Settings, worker: str) -> None:
    """A worker shutting down cleanly leaves at once instead of after `worker_gone_s`."""
    client.delete(presence_key(settings, worker))
    client.srem(names_key(settings), worker)


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
    # A set of names, not a SCAN: a SCAN walks every key of the database (Celery's results included).
    names = sorted(name.decode() if isinstance(name, bytes) else str(name)
                   for name in client.smembers(names_key(settings)))  # fmt: skip
    if not names:
        return {}
    found: dict[str, Announcement] = {}
    gone = []
    for name, body in zip(names, client.mget([presence_key(settings, name) for name in names]), strict=True):
        if body is None:  # its key expired: the worker stopped announcing itself
            gone.append(name)
            continue
        try:
            found[name] = parse_announcement(body)
        except (ValueError, KeyError, TypeError):
            continue
    if gone:
        client.srem(names_key(settings), *gone)
    return found


def names_key(settings: Settings) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{PRESENCE_NAMES}"
