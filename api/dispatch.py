"""How the gateway hands work to the workers: find the device class's queue, cut jobs into chunks, send tasks by name.

The gateway imports no worker code: it sends task names from shared/names.py over the shared Celery
configuration (shared/celery_config.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import redis
import redis.asyncio
from celery import Celery, states
from celery.exceptions import TimeoutError as CeleryTimeoutError

from shared import clock
from shared.names import LEADERBOARD_TASK, PREDICT_CHUNK_TASK, SCORE_TASK, SYNTH_TASK, TRAIN_TASK
from shared.routing import job_queue, plan_chunks
from shared.schemas import ChunkRecord, JobRecord
from shared.settings import Settings
from shared.worker_presence import live_workers, redis_client

PLACEHOLDER_TASKS = {"train": TRAIN_TASK, "synth": SYNTH_TASK, "leaderboard": LEADERBOARD_TASK}
log = logging.getLogger(__name__)
T = TypeVar("T")


# GET /healthz reuses one view of the broker and the workers this long, and never waits longer for a new one.
HEALTH_CACHE_S = 2.0
HEALTH_WAIT_S = 0.5
HEALTH_STALE_S = 30.0  # an older view is not repeated while a refresh hangs: the broker counts as unreachable
# A waiting score request reads its result this often (seconds, growing from the first to the second).
SCORE_POLL_S = (0.05, 0.25)
SCORE_EXPIRY_BACKSTOP_S = 3600  # see send_score: wider than any clock skew between hosts


class BrokerUnavailableError(RuntimeError):
    pass


class ScoreCapacityError(RuntimeError):
    """SCORE_MAX_IN_FLIGHT score requests are waiting already."""


class ClientGoneError(RuntimeError):
    """The client of a waiting score request disconnected."""


@dataclass(frozen=True)
class HealthView:
    broker: str  # "ok", or "unreachable: <why>" (the why names the Redis host: the log's, never the client's)
    workers: dict[str, list[str]]
    checked_at: float


def _in_own_thread(function: Callable[[], T], *, name: str) -> concurrent.futures.Future[T]:
    """Run `function` in a new daemon thread; its future. For rare, possibly slow calls that must not wait on (or
    occupy) the request thread pool."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(function())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class WorkerDirectory:
    """Which workers are up and which queues they consume, asked over the broker (cached briefly).

    Args:
        celery: the gateway's Celery client.
        settings: INSPECT_TIMEOUT_S and FALLBACK_QUEUE are read.
        cache_seconds: how long one answer is reused.
    """

    def __init__(
        self, celery: Celery, settings: Settings, *, cache_seconds: float = 5.0, remember_seconds: float = 600.0
    ) -> None:
        self.celery = celery
        self.settings = settings
        self.cache_seconds = cache_seconds
        self.remember_seconds = remember_seconds
        self._redis = redis_client(settings)
        self._cached: tuple[float, dict[str, list[str]]] | None = None
        self._last_seen: tuple[float, dict[str, list[str]]] | None = None
        self._health: HealthView | None = None
        self._health_refresh: concurrent.futures.Future | None = None
        self._health_lock = threading.Lock()
        self._broker_seen: tuple[float, str] = (float("-inf"), "")

    def active_queues(self, *, fresh: bool = False) -> dict[str, list[str]]:
        """Worker name → queue names; {} when none is alive.

        First from the workers' own announcements in Redis (shared/worker_presence.py), which busy workers keep
        making; only when none announces itself (workers of an older release) from an `inspect` broadcast, which a
        solo-pool worker busy with a chunk cannot answer.
        """
        if not fresh and self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        try:
            clock.sync_if_stale(self._redis)  # the records this gateway writes are on Redis' clock
            workers = live_workers(self._redis, self.settings)
            if not workers:
                replies = self.celery.control.inspect(timeout=self.settings.INSPECT_TIMEOUT_S).active_queues() or {}
                workers = {worker: sorted(queue["name"] for queue in queues) for worker, queues in replies.items()}
        except Exception as exc:  # redis-py and kombu raise several connection error types
            raise BrokerUnavailableError(
                f"the broker at REDIS_URL does not answer ({type(exc).__name__}: {exc})"
            ) from exc
        self._cached = (time.monotonic(), workers)
        if workers:
            self._last_seen = self._cached
        return workers

    def recently_seen(self) -> dict[str, list[str]]:
        """The last non-empty answer, if younger than `remember_seconds`, else {}.

        A solo-pool worker busy with a task cannot answer a broadcast: silence right after it answered means
        busy, not gone, and its queue still takes work.
        """
        if self._last_seen and time.monotonic() - self._last_seen[0] < self.remember_seconds:
            return self._last_seen[1]
        return {}

    def queue_for_jobs(self) -> str:
        return job_queue(self.active_queues(fresh=True), fallback=self.settings.FALLBACK_QUEUE)

    def broker_reachable(self) -> str:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=self.settings.INSPECT_TIMEOUT_S)
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}: {exc}"
        return "ok"

    async def health(self) -> HealthView:
        """The broker's state and the live workers, for GET /healthz: never waits more than HEALTH_WAIT_S.

        The answer is reused for HEALTH_CACHE_S. A stale one is refreshed in a thread of its own (never the request
        thread pool, which a burst may occupy), one refresh at a time; a refresh slower than HEALTH_WAIT_S (a broker
        that does not answer, a broadcast to workers of an older release) leaves the last view in place for up to
        HEALTH_STALE_S, then reports the broker unreachable.
        """
        cached = self._health
        if cached is not None and time.monotonic() - cached.checked_at < HEALTH_CACHE_S:
            return cached
        with self._health_lock:
            if self._health_refresh is None or self._health_refresh.done():
                self._health_refresh = _in_own_thread(self._refresh_health, name="arena-health")
            refresh = self._health_refresh
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(refresh)), timeout=HEALTH_WAIT_S)
        except TimeoutError:
            log.warning("health: the broker did not answer within %ss", HEALTH_WAIT_S)
            if self._health is not None and time.monotonic() - self._health.checked_at < HEALTH_STALE_S:
                return self._health
            broker_at, broker = self._broker_seen
            if time.monotonic() - broker_at < HEALTH_CACHE_S:  # the broker answered; the workers' broadcast is slow
                return HealthView(broker=broker, workers={}, checked_at=broker_at)
            return HealthView(broker="unreachable: no answer in time", workers={}, checked_at=time.monotonic())

    def _refresh_health(self) -> HealthView:
        broker = self.broker_reachable()
        self._broker_seen = (time.monotonic(), broker)
        workers: dict[str, list[str]] = {}
        if broker == "ok":
            try:
                # A solo-pool worker busy with a task does not answer a broadcast: recently seen means still there.
                workers = self.active_queues() or self.recently_seen()
            except BrokerUnavailableError as exc:
                broker = f"unreachable: {exc}"
        self._health = HealthView(broker=broker, workers=workers, checked_at=time.monotonic())
        return self._health


def new_predict_record(job_id: str, *, params: dict, rows: int, queue: str, chunk_rows: int) -> JobRecord:
    """A predict job's record: its rows cut into chunks (shared/routing.py, plan_chunks), all on `queue`."""
    chunks = [
        ChunkRecord(index=index, queue=queue, start=start, stop=stop, task_id=uuid.uuid4().hex)
        for index, (start, stop) in enumerate(plan_chunks(rows, chunk_rows))
    ]
    record = JobRecord(id=job_id, kind="predict", params=params, chunks=chunks)
    record.progress.total = rows
    record.task_ids = [chunk.task_id for chunk in chunks]
    return record


def send_predict_job(celery: Celery, record: JobRecord) -> list[str]:
    """One task per chunk, in row order, sent by name under the ids the record holds; returns the ids sent.

    The chunks wait on their device class's queue, and each worker consuming it takes the next one when it is free
    (prefetch 1, acknowledged after the task ran). The chunk that completes the set assembles the submission.
    Called after the record is stored: a gateway that dies before it leaves a `queued` record, which the workers'
    sweeper sends (workers/sweeper/).
    """
    with celery.producer_or_acquire() as producer:  # one connection for every chunk of the job
        for chunk in record.chunks:
            celery.send_task(
                PREDICT_CHUNK_TASK,
                kwargs={"job_id": record.id, "chunk_index": chunk.index},
                queue=chunk.queue,
                task_id=chunk.task_id,
                producer=producer,
            )
    return [chunk.task_id for chunk in record.chunks]


def send_placeholder_job(celery: Celery, record: JobRecord) -> list[str]:
    """The one task of a train, synth or leaderboard job, on the queue its record names; returns its id."""
    celery.send_task(
        PLACEHOLDER_TASKS[record.kind], kwargs={"job_id": record.id}, queue=record.queue, task_id=record.task_ids[-1]
    )
    return [record.task_ids[-1]]


def revoke(celery: Celery, task_ids: list[str]) -> None:
    """Drop the job's queued tasks; running chunks notice the cancelled record and stop at their next chunk."""
    celery.control.revoke(task_ids)


class ScoreCapacity:
    """How many score requests wait on workers now, at most `limit` (SCORE_MAX_IN_FLIGHT).

    A lock, not just the event loop: a TestClient runs each request on an event loop of its own.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold one place for the block; ScoreCapacityError at once when none is free."""
        with self._lock:
            if self.in_flight >= self.limit:
                raise ScoreCapacityError(f"{self.in_flight} score requests are waiting already")
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


async def score_pairs(
    celery: Celery,
    settings: Settings,
    payload: dict,
    *,
    queue: str,
    client_gone: Callable[[], Awaitable[bool]] | None = None,
) -> dict:
    """Run the score task on `queue` and wait for its result without holding a thread.

    The message expires, and its payload carries a deadline (epoch seconds), both at SCORE_TIMEOUT_S from now: any
    worker, including one started later, skips it once nobody waits for it (Celery drops an expired message; the
    task checks the deadline). No revoke: only workers online would hear it, and a burst of them starves the broker
    connection pool.

    Raises:
        celery.exceptions.TimeoutError: no result within SCORE_TIMEOUT_S (or the worker dropped it as expired).
        ClientGoneError: `client_gone()` said the client disconnected.
        BrokerUnavailableError: Redis did not answer.
        Exception: the task failed (rebuilt from its result).
    """
    timeout = settings.SCORE_TIMEOUT_S
    task_id = uuid.uuid4().hex
    deadline = clock.now() + timeout  # checked by the worker: on the one clock (shared/clock.py)
    send = functools.partial(
        celery.send_task,
        SCORE_TASK,
        args=[{**payload, "deadline": deadline}],
        queue=queue,
        task_id=task_id,
        # Celery compares `expires` with the worker's own wall clock, so it is only a backstop for messages nobody
        # ever takes (a skewed worker would drop every fresh one); the payload's deadline is the exact check.
        expires=timeout + SCORE_EXPIRY_BACKSTOP_S,
    )
    try:
        await anyio.to_thread.run_sync(send)
    except Exception as exc:  # kombu raises several connection error types
        raise BrokerUnavailableError(f"could not send the score task ({type(exc).__name__}: {exc})") from exc
    key = celery.backend.get_key_for_task(task_id)
    # A connection of this request's own: the gateway's other Redis clients are synchronous, and an asyncio
    # client cannot be shared between event loops.
    results = redis.asyncio.Redis.from_url(
        settings.REDIS_URL, socket_timeout=settings.INSPECT_TIMEOUT_S + 2, socket_connect_timeout=2
    )
    try:
        delay = SCORE_POLL_S[0]
        while True:
            try:
                raw = await results.get(key)
            except redis.RedisError as exc:
                raise BrokerUnavailableError(f"the result backend does not answer ({type(exc).__name__})") from exc
            if raw is not None:
                meta = celery.backend.decode_result(raw)
                if meta["status"] == states.SUCCESS:
                    return meta["result"]
                if meta["status"] == states.FAILURE:
                    raise celery.backend.exception_to_python(meta["result"])
                if meta["status"] == states.REVOKED:  # a worker dropped it: expired, or revoked elsewhere
                    raise CeleryTimeoutError(f"score task {task_id} was dropped by the worker")
            left = deadline - clock.now()
            if left <= 0:
                raise CeleryTimeoutError(f"no result for score task {task_id} within {timeout}s")
            if client_gone is not None and await client_gone():
                raise ClientGoneError(f"the client of score task {task_id} disconnected")
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 1.5, SCORE_POLL_S[1])
    finally:
        # No revoke when the gateway gives up: the message's expiry and the payload's deadline drop it on any worker,
        # and a burst of revokes (one per request that gave up) deadlocked the broker connection pool in load tests.
        try:
            await results.delete(key)  # the gateway never reads a score result twice
        except redis.RedisError:
            pass
        await results.aclose()
