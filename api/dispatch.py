"""How the gateway hands work to the workers: find the live queues, plan shards, send tasks by name.

The gateway imports no worker code: it sends task names from shared/names.py over the shared Celery
configuration (shared/celery_config.py).
"""

from __future__ import annotations

import time
import uuid

from celery import Celery

from shared.names import PREDICT_SHARD_TASK, SCORE_TASK, SYNTH_TASK, TRAIN_TASK
from shared.routing import plan_shards, predict_queues
from shared.schemas import JobRecord, ShardRecord
from shared.settings import Settings
from shared.worker_presence import live_workers, redis_client

PLACEHOLDER_TASKS = {"train": TRAIN_TASK, "synth": SYNTH_TASK}


class BrokerUnavailableError(RuntimeError):
    pass


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

    def active_queues(self, *, fresh: bool = False) -> dict[str, list[str]]:
        """Worker name → queue names; {} when none is alive.

        First from the workers' own announcements in Redis (shared/worker_presence.py), which busy workers keep
        making; only when none announces itself (workers of an older release) from an `inspect` broadcast, which a
        solo-pool worker busy with a shard cannot answer.
        """
        if not fresh and self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        try:
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

    def queues_for_jobs(self) -> list[str]:
        return predict_queues(self.active_queues(fresh=True), fallback=self.settings.FALLBACK_QUEUE)

    def broker_reachable(self) -> str:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=self.settings.INSPECT_TIMEOUT_S)
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}: {exc}"
        return "ok"


def new_predict_record(job_id: str, *, params: dict, rows: int, queues: list[str]) -> JobRecord:
    shards = [
        ShardRecord(index=index, queue=queue, start=start, stop=stop, task_id=uuid.uuid4().hex)
        for index, (queue, start, stop) in enumerate(plan_shards(rows, queues))
    ]
    record = JobRecord(id=job_id, kind="predict", params=params, shards=shards)
    record.progress.total = rows
    record.task_ids = [shard.task_id for shard in shards]
    return record


def send_predict_job(celery: Celery, record: JobRecord) -> list[str]:
    """One shard task per planned shard, sent by name, under the ids the record holds; returns the ids sent.

    The shard that completes the set assembles the submission. Called after the record is stored: a gateway that
    dies before it leaves a `queued` record, which the workers' sweeper sends (workers/sweeper.py).
    """
    for shard in record.shards:
        celery.send_task(
            PREDICT_SHARD_TASK,
            kwargs={"job_id": record.id, "shard_index": shard.index},
            queue=shard.queue,
            task_id=shard.task_id,
        )
    return [shard.task_id for shard in record.shards]


def send_placeholder_job(celery: Celery, record: JobRecord) -> list[str]:
    """The one task of a train or synth job, on the queue its record names; returns its id."""
    celery.send_task(
        PLACEHOLDER_TASKS[record.kind], kwargs={"job_id": record.id}, queue=record.queue, task_id=record.task_ids[-1]
    )
    return [record.task_ids[-1]]


def revoke(celery: Celery, task_ids: list[str]) -> None:
    """Drop the job's queued tasks; running shards notice the cancelled record and stop at their next chunk."""
    celery.control.revoke(task_ids)


def score_pairs(celery: Celery, payload: dict, *, queue: str, timeout: float) -> dict:
    """Run the score task on `queue` and wait for it; raises celery.exceptions.TimeoutError after `timeout`."""
    result = celery.send_task(SCORE_TASK, args=[payload], queue=queue)
    try:
        return result.get(timeout=timeout, propagate=True)
    except Exception:
        celery.control.revoke(result.id)
        raise
    finally:
        result.forget()
