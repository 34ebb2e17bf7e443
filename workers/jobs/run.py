"""What every job step shares: `JobRun` (its record, progress, cancel and deadline), publishing files together."""

from __future__ import annotations

import faulthandler
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shared import clock
from shared.job_store import JobStore
from shared.log_format import pop_log_fields, push_log_fields
from shared.schemas import ChunkRecord, JobRecord, utc_now
from shared.settings import Settings
from workers.common.hardware import cuda_peak_memory, reset_cuda_peak_memory
from workers.identity import process_instance

log = logging.getLogger(__name__)


class JobCancelledError(RuntimeError):
    """The job was cancelled (or failed elsewhere) while this step ran; stop without publishing anything."""


class StaleDeliveryError(RuntimeError):
    """This delivery is not the step's current attempt (re-queued under another task id, or running elsewhere).

    It stops without touching the record: the current attempt owns it.
    """


class ArtifactWriteError(OSError):
    """A job's files could not be written to shared storage (full, read-only, permissions)."""


def job_time_limit_s(settings: Settings, params: dict) -> int:
    """The job's own time limit when it asked for one, never more than the server's JOB_TIME_LIMIT_S."""
    return min(params.get("time_limit_s") or settings.JOB_TIME_LIMIT_S, settings.JOB_TIME_LIMIT_S)


@dataclass
class RunningStep:
    """The step this worker process runs now (a solo worker runs one at a time), for the watchdog.

    `job_id` is None for a score task: it has no job record to fail. `grace_s` None means HARD_STOP_GRACE_S (a job
    step checks its deadline at each progress report, the grace covers one batch); a score task has no such check,
    so its limit is hard (grace 0).
    """

    job_id: str | None
    chunk_index: int | None
    task_id: str | None
    deadline: float
    time_limit_s: float
    grace_s: float | None = None


_running_step: RunningStep | None = None


def running_step() -> RunningStep | None:
    """The step with a deadline this process runs now, or None (read by workers/background.py's watchdog)."""
    return _running_step


# How long past its time limit a watched task may hold the GIL before faulthandler exits the worker (the watchdog,
# which beats every WORKER_HEARTBEAT_S, acts first whenever it gets the GIL).
BACKSTOP_MARGIN_S = 30.0
STDERR_FD = 2


@contextmanager
def watched_task(*, task_id: str | None, time_limit_s: float) -> Iterator[RunningStep]:
    """Register a step without a job record (a score task) with the watchdog for the duration of the block.

    Past `time_limit_s` the watchdog stops the worker hard (workers/background.py): the only bound on a call that
    never returns, since the solo pool ignores Celery's own time limits.
    """
    global _running_step
    step = RunningStep(None, None, task_id, clock.now() + time_limit_s, time_limit_s, grace_s=0.0)
    _running_step = step
    # The watchdog is a Python thread: a single C call that holds the GIL (a regex, a tokenizer) starves it. This
    # backstop is faulthandler's own C thread, which needs no GIL: it prints every thread's stack and exits the
    # process (_exit(1)) when the block outlives the watchdog by BACKSTOP_MARGIN_S; the supervisor restarts it.
    # File descriptor 2, never sys.stderr: a Celery worker replaces that with a logging proxy that has no fileno.
    faulthandler.dump_traceback_later(time_limit_s + BACKSTOP_MARGIN_S, exit=True, file=STDERR_FD)
    try:
        yield step
    finally:
        faulthandler.cancel_dump_traceback_later()
        if _running_step is step:
            _running_step = None


def fail_after_max_attempts(
    record: JobRecord, unit: JobRecord | ChunkRecord, *, max_attempts: int, last_time: str
) -> str | None:
    """The attempts rule, one for the job run and the sweeper: a step (a whole job, or one chunk of it) started
    `max_attempts` times without finishing fails, and its job with it; each start died, likely of memory.

    Args:
        record: the job's record, changed in place (inside a JobStore update).
        unit: the step: `record` itself, or one of its chunks.
        max_attempts: JOB_MAX_ATTEMPTS.
        last_time: what happened to the last attempt, for the reason.

    Returns:
        The reason when the step failed now; None while it has attempts left.
    """
    if unit.attempts < max_attempts:
        return None
    if isinstance(unit, ChunkRecord):
        what, remedy = f"chunk {unit.index} (rows {unit.start}-{unit.stop - 1})", "lower PREDICT_CHUNK_ROWS"
    else:
        what, remedy = "the job", "lower the batch size or the model"
    reason = (
        f"{what} was started {unit.attempts} times without finishing; last time {last_time}. It may not fit the"
        f" worker's memory: {remedy}, or raise JOB_MAX_ATTEMPTS"
    )
    unit.state, unit.error = "failed", reason
    record.state, record.error = "failed", reason
    return reason


class JobRun:
    """A job step's hold on its record (SHARED_DIR/jobs/<id>.json), the one protocol of predict, train and synth.

    Entering reads the record (JobCancelledError when the job is finished already; StaleDeliveryError when this
    delivery's task id is no longer the step's current one). `start()` claims the step for this worker: it counts
    the attempt (the job fails past JOB_MAX_ATTEMPTS), takes a lease of LEASE_S and fixes the deadline (this
    attempt's start + the job's time limit). `report()` records progress, renews the lease and stops the step
    (JobCancelledError) when the job was cancelled or failed elsewhere, or ran past its deadline, which then
    fails the job (and the chunk) with a message saying what to change; it raises StaleDeliveryError when the
    sweeper gave the step to another attempt meanwhile. Failing the job on other errors stays with the Celery
    task, which knows whether a retry is left.

        with JobRun(settings, job_id, unit="distinct pairs", task_id=..., worker=...) as run:
            config = config_from(run.params)   # a bad request fails here, before the job is started
            run.start()
            label(config, on_progress=run.report)
            run.succeed(artifacts, result)

    Args:
        settings: SHARED_DIR, JOB_TIME_LIMIT_S, LEASE_S and JOB_MAX_ATTEMPTS are read.
        job_id: the job.
        unit: what progress counts, for messages ("rows", "steps", "distinct pairs").
        chunk_index: the predict chunk this step judges (progress and failure go to the chunk), or None.
        deadline_hint: what to change when the job runs past its time limit.
        task_id: the Celery task id of this delivery; None (a direct call, no queue) skips the ownership checks.
        worker: this worker's name, recorded for the user and the sweeper.
        instance: this worker process's instance, recorded with the claim (default: the one its start announced,
            workers/identity.py); the sweeper takes a claim whose name now announces another instance for dead.
    """

    def __init__(
        self,
        settings: Settings,
        job_id: str,
        *,
        unit: str,
        chunk_index: int | None = None,
        deadline_hint: str = "raise time_limit_s",
        task_id: str | None = None,
        worker: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        self.job_id = job_id
        self.unit = unit
        self.chunk_index = chunk_index
        self.deadline_hint = deadline_hint
        self.task_id = task_id
        self.worker = worker
        self.instance = instance if instance is not None else process_instance()
        self.store = JobStore(settings.SHARED_DIR)
        self.time_limit_s: int | None = None
        self.deadline: float | None = None

    def __enter__(self) -> JobRun:
        # Every line logged during the step names its job, chunk, tenant and worker (LOG_FORMAT=json).
        self._log_fields = push_log_fields(job_id=self.job_id, chunk=self.chunk_index, worker=self.worker)
        try:
            self.record = self.store.read(self.job_id)
            self._log_fields_with_tenant = push_log_fields(tenant=self.record.tenant)
            if self.record.terminal:
                raise JobCancelledError(f"job {self.job_id} is already {self.record.state}")
            self._check_current(self.record)
        except BaseException:
            self._pop_log_fields()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        global _running_step
        if _running_step is not None and _running_step.job_id == self.job_id:
            _running_step = None
        self._pop_log_fields()
        return None

    def _pop_log_fields(self) -> None:
        for name in ("_log_fields_with_tenant", "_log_fields"):  # the inner one first
            token = self.__dict__.pop(name, None)
            if token is not None:
                pop_log_fields(token)

    @property
    def params(self) -> dict:
        return self.record.params

    @property
    def chunk(self) -> ChunkRecord:
        return _chunk_of(self.record, self.chunk_index)

    def _current_task_id(self, record: JobRecord) -> str | None:
        if self.chunk_index is not None:
            return _chunk_of(record, self.chunk_index).task_id
        return record.task_ids[-1] if record.task_ids else None

    def _check_current(self, record: JobRecord) -> None:
        current = self._current_task_id(record)
        if self.task_id is not None and current is not None and current != self.task_id:
            raise StaleDeliveryError(
                f"task {self.task_id} of job {self.job_id} was superseded by task {current}; leaving it to that one"
            )

    def start(self, *, deadline: bool = True, **chunk_fields) -> JobRecord:
        """Claim the step for this worker (an attempt, a lease) and mark it running; with `deadline`, stop it at
        its time limit, counted from this attempt's start.

        Raises:
            StaleDeliveryError: the step is not this delivery's, or another live worker holds its lease (the same
                task sent twice).
            JobCancelledError: the job failed: the step was started JOB_MAX_ATTEMPTS times already.
        """
        reset_cuda_peak_memory()  # the peak succeed() records is this step's own
        gave_up: str | None = None

        def change(record: JobRecord) -> None:
            nonlocal gave_up
            self._check_current(record)
            unit = record if self.chunk_index is None else _chunk_of(record, self.chunk_index)
            now = utc_now()
            if (
                unit.state == "running"
                and unit.worker not in (None, self.worker)
                and unit.lease_until is not None
                and unit.lease_until > now
            ):
                raise StaleDeliveryError(
                    f"job {self.job_id}{self._chunk_words()} is running on {unit.worker} (lease until"
                    f" {unit.lease_until:%H:%M:%S}); this is a second delivery of the same task"
                )
            gave_up = fail_after_max_attempts(
                record,
                unit,
                max_attempts=self.settings.JOB_MAX_ATTEMPTS,
                last_time=f"its worker ({unit.worker or 'unknown'}) stopped or was killed",
            )
            if gave_up is not None:
                return
            unit.attempts += 1
            if self.worker is not None:
                unit.worker, unit.worker_instance = self.worker, self.instance
            unit.lease_until = now + timedelta(seconds=self.settings.LEASE_S)
            if self.chunk_index is None:
                if record.state in ("queued", "dispatched"):
                    record.state = "running"
                record.started_at = record.started_at or now
            else:
                unit.state, unit.error = "running", None
                for name, value in chunk_fields.items():
                    setattr(unit, name, value)
                if record.state in ("queued", "dispatched"):
                    record.state = "running"
                record.started_at = record.started_at or now

        self.record = self.store.update(self.job_id, change)
        if gave_up is not None:
            raise JobCancelledError(gave_up)
        if deadline:
            self.time_limit_s = job_time_limit_s(self.settings, self.record.params)
            if self.chunk_index is not None and self.record.started_at is not None:
                # A predict job's chunks share one deadline, from its first chunk's start: the limit bounds the
                # job, however many chunks it has and however many workers judge them.
                self.deadline = self.record.started_at.timestamp() + self.time_limit_s
            else:
                # A train or synth job: from this attempt's start, not the job's first started_at. Re-queued after
                # its worker died (minutes or hours later) it would otherwise arrive past its deadline and fail.
                self.deadline = clock.now() + self.time_limit_s
            global _running_step
            _running_step = RunningStep(self.job_id, self.chunk_index, self.task_id, self.deadline, self.time_limit_s)
        return self.record

    def report(self, done: int, total: int, *, result: dict | None = None) -> None:
        """Record progress and renew the lease, then stop when the job is no longer wanted (see `check`)."""

        def change(current: JobRecord) -> None:
            self._check_current(current)
            lease_until = utc_now() + timedelta(seconds=self.settings.LEASE_S)
            if self.chunk_index is not None:
                chunk = _chunk_of(current, self.chunk_index)
                chunk.done, chunk.lease_until = done, lease_until
            else:
                current.progress.done, current.progress.total = done, total
                current.lease_until = lease_until
                if result is not None:
                    current.result = dict(result)

        record = self.store.update(self.job_id, change)
        if self.chunk_index is not None:  # the job's progress: every chunk's rows
            self._stop_if_unwanted(record, past_deadline_counts=True)
        else:  # the last report of a whole-job step is its end: finishing beats failing at the deadline
            self._stop_if_unwanted(record, past_deadline_counts=done < total, progress=(done, total))

    def check(self) -> None:
        """Renew the lease; stop (JobCancelledError) when the job was cancelled or failed elsewhere, or ran past its
        deadline (StaleDeliveryError when another attempt took the step over)."""

        def change(current: JobRecord) -> None:
            self._check_current(current)
            unit = current if self.chunk_index is None else _chunk_of(current, self.chunk_index)
            unit.lease_until = utc_now() + timedelta(seconds=self.settings.LEASE_S)

        self._stop_if_unwanted(self.store.update(self.job_id, change), past_deadline_counts=True)

    def succeed(self, *, artifacts: list[str], result: dict) -> JobRecord:
        """Finish the job with its result, plus this step's CUDA memory peak when it used CUDA."""
        return self.store.succeed(self.job_id, artifacts=artifacts, result={**result, **cuda_peak_memory()})

    def _chunk_words(self) -> str:
        return "" if self.chunk_index is None else f" chunk {self.chunk_index}"

    def _where(self, record: JobRecord, progress: tuple[int, int] | None) -> str:
        done, total = progress or (record.progress.done, record.progress.total)
        where = f"after {done} of {total} {self.unit}"
        return where if self.chunk_index is None else f"{where} (chunk {self.chunk_index})"

    def _stop_if_unwanted(
        self, record: JobRecord, *, past_deadline_counts: bool, progress: tuple[int, int] | None = None
    ) -> None:
        if record.terminal:
            raise JobCancelledError(f"job {self.job_id} was {record.state} {self._where(record, progress)}")
        self._check_current(record)
        if past_deadline_counts and self.deadline is not None and clock.now() > self.deadline:
            reason = (
                f"the job ran longer than its time limit of {self.time_limit_s}s and was stopped"
                f" {self._where(record, progress)}; {self.deadline_hint}"
            )
            self._fail(reason)
            raise JobCancelledError(reason)

    def _fail(self, reason: str) -> None:
        if self.chunk_index is None:
            self.store.fail(self.job_id, reason)
            return

        def change(record: JobRecord) -> None:
            chunk = _chunk_of(record, self.chunk_index)
            chunk.state, chunk.error = "failed", reason
            record.state, record.error = "failed", reason

        self.store.update(self.job_id, change)


def _chunk_of(record: JobRecord, index: int | None) -> ChunkRecord:
    for chunk in record.chunks:
        if chunk.index == index:
            return chunk
    raise KeyError(f"job {record.id} has no chunk {index}")


def publish_together(output_dir: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Write every file to a staged name, then publish them all; on any error none of them is left visible.

    A file that exists already (an earlier or concurrent delivery of the same step) is kept, never replaced.
    """
    if all((output_dir / name).exists() for name in writers):
        log.warning("the files of %s exist already; keeping them", output_dir.name)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    published: list[Path] = []
    try:
        for name, write in writers.items():
            staged[name] = output_dir / f".{name}.{uuid.uuid4().hex}.staged"
            write(staged[name])
        for name, path in staged.items():
            try:
                os.link(path, output_dir / name)  # atomic, and unlike a rename it fails when the file exists
                published.append(output_dir / name)
            except FileExistsError:
                log.warning("%s/%s was written concurrently; keeping that one", output_dir.name, name)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
