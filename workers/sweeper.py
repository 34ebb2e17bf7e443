"""The sweeper: reconciles job records (the source of truth) with the queues, so that no job stays stuck.

One pass over every unfinished record (no Celery in here: sending is a callable the caller provides):
- **outbox**: a job recorded but never sent (the gateway died between the record and the send) is sent after
  DISPATCH_GRACE_S, under the task ids the record holds, so a late send of the gateway's own counts once;
- **dead or hung steps**: a running chunk, train or synth job whose worker stopped announcing itself
  (WORKER_HEARTBEAT_S, gone after three missed beats), whose worker name announces another process instance than
  the one that claimed it (restarted: gone at once), or whose lease (LEASE_S, renewed by every batch) expired is
  re-queued under a fresh task id; the old delivery, should Redis hand it out again, is stale and stops at once.
  After JOB_MAX_ATTEMPTS starts the job fails with the reason instead;
- **stranded tasks**: a queued chunk or job whose queue no live worker consumes is sent again to one that does;
  one whose queue has a worker idle for a whole grace period was lost (a Redis without persistence restarted)
  and is sent again under the same id;
- **assembly**: a predict job whose chunks all succeeded but whose assembler never ran or is gone (dead or restarted,
  as above) gets an assembly task (claiming it again is safe: the claim is under the record's lock, files are
  published once).

- **retention** (at most once an hour): finished jobs RETENTION_DAYS after they finished are deleted (record,
  files, Idempotency-Key), and datasets that old that no unfinished job reads.

Unfinished jobs come from the index of active jobs (shared/job_store.py), not from every record ever written.
Only one sweeper acts at a time (workers/background.py holds a lock in Redis); every change is a locked
read-modify-write of the record, so a worker finishing the same step meanwhile always wins over the sweeper.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import clock as one_clock
from shared.dataset_store import DatasetStore
from shared.job_store import JobStore
from shared.names import LEADERBOARD_TASK, PREDICT_ASSEMBLE_TASK, PREDICT_CHUNK_TASK, SYNTH_TASK, TRAIN_TASK
from shared.routing import job_queue
from shared.schemas import ACTIVE_STATES, ChunkRecord, JobRecord
from shared.settings import Settings
from shared.worker_presence import Announcement
from workers.jobs.run import fail_after_max_attempts

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0
WHOLE_JOB_TASKS = {"train": TRAIN_TASK, "synth": SYNTH_TASK, "leaderboard": LEADERBOARD_TASK}


@dataclass(frozen=True)
class TaskMessage:
    """One task to send: by name, to a queue, under a fixed id."""

    name: str
    kwargs: dict
    queue: str
    task_id: str


Send = Callable[[TaskMessage], None]


class Sweeper:
    """One reconciliation pass at a time over SHARED_DIR/jobs/.

    Args:
        settings: SHARED_DIR, DISPATCH_GRACE_S, JOB_MAX_ATTEMPTS and the heartbeat are read.
        send: sends one task (raises when the broker is down; the record then still says "not sent").
        announcements: worker name → its announcement (queues, idle since), of the workers alive now.
        clock: seconds since the epoch on the one clock every host writes records with (shared/clock.py: Redis'
            time); tests pass their own.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        send: Send,
        announcements: Callable[[], dict[str, Announcement]],
        clock: Callable[[], float] = one_clock.now,
    ) -> None:
        self.settings = settings
        self.store = JobStore(settings.SHARED_DIR)
        self.send = send
        self.announcements = announcements
        self.clock = clock
        # When each worker named by a record was first found missing; a worker counts as gone only after missing
        # for worker_gone_s, so a Redis restart (which forgets every announcement) does not look like deaths.
        self._missing_since: dict[str, float] = {}
        self._unassembled: dict[str, float] = {}
        self._idle_queues: set[str] = set()
        self._announced: dict[str, Announcement] = {}
        self._last_retention: float | None = None

    def sweep(self) -> list[str]:
        """One pass; returns what it did, one line per action (for the log and the tests)."""
        announced = self.announcements()
        self._announced = announced
        workers = {name: announcement.queues for name, announcement in announced.items()}
        now = self.clock()
        # Queues a worker has been idle on for a whole grace period: a task sent there and still not started was
        # lost (a Redis without persistence restarted), so it is sent again under the same id.
        self._idle_queues = {
            queue
            for announcement in announced.values()
            if announcement.idle_since is not None and now - announcement.idle_since >= self.settings.DISPATCH_GRACE_S
            for queue in announcement.queues
        }
        for name in list(self._missing_since):
            if name in workers:
                del self._missing_since[name]
        live_queues = {queue for queues in workers.values() for queue in queues}
        actions: list[str] = []
        for record in self.store.active():
            if record.state not in ACTIVE_STATES:
                continue
            try:
                actions += self._sweep_record(record, workers=workers, live_queues=live_queues, now=now)
            except Exception:  # one bad record must not stop the others being swept
                log.exception("sweeping job %s failed", record.id)
        for action in actions:
            log.warning("sweeper: %s", action)
        if self._last_retention is None or now - self._last_retention >= RETENTION_INTERVAL_S:
            self._last_retention = now
            try:
                for action in self.retain():
                    log.info("sweeper: %s", action)
            except Exception:
                log.exception("the retention pass failed; retrying at the next one")
        return actions

    # --- retention -----------------------------------------------------------------------------------------

    def retain(self) -> list[str]:
        """Delete finished jobs and unused datasets older than RETENTION_DAYS; returns what it deleted."""
        cutoff = self.clock() - self.settings.RETENTION_DAYS * 86400
        actions = []
        # A record is written last when its job ends, so its mtime is a cheap first filter: only records not
        # touched since the cutoff are read at all.
        for path in self.store.jobs_dir.glob("*.json"):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                record = self.store.read(path.stem)
            except (OSError, ValueError, KeyError):
                continue
            ended = record.finished_at or record.created_at
            if record.terminal and ended.timestamp() < cutoff:
                self.store.delete(record.id)
                actions.append(
                    f"job {record.id} ({record.kind}, {record.state}) deleted: finished over RETENTION_DAYS ago"
                )
        datasets = DatasetStore(self.settings.SHARED_DIR, max_bytes=self.settings.MAX_UPLOAD_BYTES)
        in_use, _ = self.store.inputs_in_use()
        for info in datasets.list():
            if info.created_at.timestamp() < cutoff and info.id not in in_use:
                datasets.delete(info.id)
                actions.append(f"dataset {info.id} deleted: older than RETENTION_DAYS and no unfinished job reads it")
        return actions

    # --- per record --------------------------------------------------------------------------------------

    def _sweep_record(self, record: JobRecord, *, workers, live_queues: set[str], now: float) -> list[str]:
        if record.kind == "predict":
            actions = self._sweep_chunks(record, workers=workers, live_queues=live_queues, now=now)
            return actions + self._sweep_assembly(self.store.read(record.id), workers=workers, now=now)
        return self._sweep_whole_job(record, workers=workers, live_queues=live_queues, now=now)

    def _sweep_chunks(self, record: JobRecord, *, workers, live_queues: set[str], now: float) -> list[str]:
        actions = []
        queue = job_queue(workers, fallback=self.settings.FALLBACK_QUEUE)
        for chunk in record.chunks:
            if chunk.state == "running":
                why = self._why_dead(chunk.worker, chunk.lease_until, chunk.worker_instance, workers=workers, now=now)
                if why is not None:
                    actions.append(self._requeue_chunk(record.id, chunk.index, why, queue=queue))
            elif chunk.state == "queued":
                if chunk.sent_at is None and self._age(record.created_at, now) >= self.settings.DISPATCH_GRACE_S:
                    actions.append(self._send_chunk(record.id, chunk, reason="its task was recorded but never sent"))
                elif chunk.sent_at is not None and self._age(chunk.sent_at, now) >= self.settings.DISPATCH_GRACE_S:
                    if live_queues and chunk.queue not in live_queues:
                        reason = f"no live worker consumes its queue {chunk.queue}"
                        actions.append(self._requeue_chunk(record.id, chunk.index, reason, queue=queue))
                    elif chunk.queue in self._idle_queues:
                        reason = f"its task was not taken although a worker on {chunk.queue} has been idle (lost)"
                        actions.append(self._send_chunk(record.id, chunk, reason=reason))
        return [action for action in actions if action]

    def _sweep_assembly(self, record: JobRecord, *, workers, now: float) -> list[str]:
        if record.terminal or not record.chunks or any(chunk.state != "succeeded" for chunk in record.chunks):
            return []
        if record.assembler is not None:
            why = self._why_dead(record.assembler, None, record.assembler_instance, workers=workers, now=now)
            if why is None:
                return []
            cleared = False

            def release(current: JobRecord) -> None:
                nonlocal cleared
                if (current.assembler, current.assembler_instance) == (record.assembler, record.assembler_instance):
                    current.assembler, current.assembler_instance, cleared = None, None, True

            self.store.update(record.id, release)
            if not cleared:
                return []
        else:
            # The last chunk claims the assembly a moment after it succeeds: act only on a job seen waiting for a
            # whole grace period, not on one caught between those two steps.
            first_seen = self._unassembled.setdefault(record.id, now)
            if now - first_seen < self.settings.DISPATCH_GRACE_S:
                return []
        self._unassembled.pop(record.id, None)
        queue = job_queue(workers, fallback=self.settings.FALLBACK_QUEUE)
        self.send(TaskMessage(PREDICT_ASSEMBLE_TASK, {"job_id": record.id}, queue, uuid.uuid4().hex))
        return [f"job {record.id}: every chunk succeeded but no live worker assembles it; sent its assembly"]

    def _sweep_whole_job(self, record: JobRecord, *, workers, live_queues: set[str], now: float) -> list[str]:
        if record.state == "queued" and record.dispatched_at is None:
            if self._age(record.created_at, now) >= self.settings.DISPATCH_GRACE_S and record.task_ids:
                return [self._send_whole_job(record, reason="its task was recorded but never sent")]
            return []
        if record.state == "running":
            why = self._why_dead(record.worker, record.lease_until, record.worker_instance, workers=workers, now=now)
            if why is not None:
                return [self._requeue_whole_job(record.id, why, workers=workers)]
        waited = (
            record.dispatched_at is not None and self._age(record.dispatched_at, now) >= self.settings.DISPATCH_GRACE_S
        )
        if record.state == "dispatched" and waited:
            if live_queues and record.queue not in live_queues:
                why = f"no live worker consumes its queue {record.queue}"
                return [self._requeue_whole_job(record.id, why, workers=workers)]
            if record.queue in self._idle_queues:
                reason = f"its task was not taken although a worker on {record.queue} has been idle (lost)"
                return [self._send_whole_job(record, reason=reason)]
        return []

    # --- actions -----------------------------------------------------------------------------------------

    def _requeue_chunk(self, job_id: str, index: int, why: str, *, queue: str) -> str:
        """Give the chunk a fresh task id (on `queue` when its own has no live worker) and send it, or fail the job
        past JOB_MAX_ATTEMPTS."""
        outcome: tuple[str, ChunkRecord | None] = ("", None)

        def change(record: JobRecord) -> None:
            nonlocal outcome
            chunk = next(chunk for chunk in record.chunks if chunk.index == index)
            if chunk.state not in ("running", "queued"):
                return  # it finished meanwhile
            if fail_after_max_attempts(record, chunk, max_attempts=self.settings.JOB_MAX_ATTEMPTS, last_time=why):
                outcome = (f"job {job_id} chunk {index}: failed the job, {why}", None)
                return
            chunk.task_id = uuid.uuid4().hex
            record.task_ids.append(chunk.task_id)
            # Judged again from its start: the rows its dead attempt reported are not done.
            chunk.state, chunk.sent_at, chunk.lease_until, chunk.done = "queued", None, None, 0
            chunk.queue = queue  # the job's device class now: the same queue unless only another class is left
            chunk.error = f"re-queued: {why}"
            outcome = (f"job {job_id} chunk {index}: re-queued on {chunk.queue}, {why}", chunk.model_copy())

        self.store.update(job_id, change)
        action, chunk = outcome
        if chunk is not None:
            self._send_chunk(job_id, chunk, reason=None)
        return action

    def _send_chunk(self, job_id: str, chunk: ChunkRecord, *, reason: str | None) -> str:
        message = TaskMessage(PREDICT_CHUNK_TASK, {"job_id": job_id, "chunk_index": chunk.index}, chunk.queue,
                              chunk.task_id)  # fmt: skip
        self.send(message)
        self.store.mark_sent(job_id, task_ids=[chunk.task_id], at=self._now())
        return f"job {job_id} chunk {chunk.index}: sent to {chunk.queue}, {reason}" if reason else ""

    def _requeue_whole_job(self, job_id: str, why: str, *, workers) -> str:
        outcome: tuple[str, JobRecord | None] = ("", None)
        live = job_queue(workers, fallback=self.settings.FALLBACK_QUEUE)

        def change(record: JobRecord) -> None:
            nonlocal outcome
            if fail_after_max_attempts(record, record, max_attempts=self.settings.JOB_MAX_ATTEMPTS, last_time=why):
                outcome = (f"job {job_id}: failed, {why}", None)
                return
            record.task_ids.append(uuid.uuid4().hex)
            record.state, record.dispatched_at, record.lease_until = "queued", None, None
            record.queue = live
            outcome = (f"job {job_id}: re-queued on {record.queue}, {why}", record.model_copy())

        self.store.update(job_id, change)
        action, record = outcome
        if record is not None:
            self._send_whole_job(record, reason=None)
        return action

    def _send_whole_job(self, record: JobRecord, *, reason: str | None) -> str:
        queue = record.queue or self.settings.FALLBACK_QUEUE
        self.send(TaskMessage(WHOLE_JOB_TASKS[record.kind], {"job_id": record.id}, queue, record.task_ids[-1]))
        self.store.mark_sent(record.id, task_ids=[record.task_ids[-1]], at=self._now())
        return f"job {record.id}: sent to {queue}, {reason}" if reason else ""

    # --- liveness ----------------------------------------------------------------------------------------

    def _why_dead(
        self, worker: str | None, lease_until: datetime | None, instance: str | None, *, workers, now: float
    ) -> str | None:
        """Why a step held by `worker` (process `instance`, when the claim recorded it) counts as dead now, or None
        while it may still be running."""
        if lease_until is not None and lease_until.timestamp() < now:
            return f"its lease expired at {lease_until:%H:%M:%S} UTC (no progress for LEASE_S={self.settings.LEASE_S}s)"
        announced = self._announced.get(worker) if worker is not None else None
        if instance is not None and announced is not None and announced.identity is not None:
            if announced.identity.instance != instance:
                # The name is back, from another process (a restart loop, make down && make up, compose restart,
                # OOM): no process holds the claim any more. Dead at once, not after worker_gone_s or the lease.
                return f"its worker {worker} restarted (the process that claimed it is gone; a new one uses the name)"
        if worker is None or worker in workers:
            return None
        missing_since = self._missing_since.setdefault(worker, now)
        if now - missing_since >= self.settings.worker_gone_s:
            return f"its worker {worker} stopped answering (no heartbeat for {self.settings.worker_gone_s:.0f}s)"
        return None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    @staticmethod
    def _age(moment: datetime, now: float) -> float:
        return now - moment.timestamp()
