"""The Sweeper: one reconciliation pass over the active jobs, and the actions it takes (see the package's docstring)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from shared import clock as one_clock
from shared.job_store import JobStore
from shared.names import PREDICT_ASSEMBLE_TASK, PREDICT_CHUNK_TASK
from shared.routing import job_queue
from shared.schemas import ACTIVE_STATES, ChunkRecord, JobRecord
from shared.settings import Settings
from shared.worker_presence import Announcement
from workers.jobs.run import fail_after_max_attempts
from workers.sweeper.liveness import WorkerLiveness
from workers.sweeper.messages import WHOLE_JOB_TASKS, Send, TaskMessage
from workers.sweeper.retention import RETENTION_INTERVAL_S, delete_expired

log = logging.getLogger(__name__)


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
        self.liveness = WorkerLiveness(settings)
        self._unassembled: dict[str, float] = {}
        self._idle_queues: set[str] = set()
        self._last_retention: float | None = None

    def sweep(self) -> list[str]:
        """One pass; returns what it did, one line per action (for the log and the tests)."""
        announced = self.announcements()
        self.liveness.observe(announced)
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
        return delete_expired(self.settings, self.store, now=self.clock())

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
                why = self.liveness.why_dead(chunk.worker, chunk.lease_until, chunk.worker_instance, now=now)
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
            why = self.liveness.why_dead(record.assembler, None, record.assembler_instance, now=now)
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
            why = self.liveness.why_dead(record.worker, record.lease_until, record.worker_instance, now=now)
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

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    @staticmethod
    def _age(moment: datetime, now: float) -> float:
        return now - moment.timestamp()
