"""What every job step shares: `JobRun` (its record, progress, cancel and deadline), publishing files together."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from shared.job_store import JobStore
from shared.schemas import JobRecord, utc_now
from shared.settings import Settings

log = logging.getLogger(__name__)


class JobCancelledError(RuntimeError):
    """The job was cancelled (or failed elsewhere) while this step ran; stop without publishing anything."""


class ArtifactWriteError(OSError):
    """A job's files could not be written to shared storage (full, read-only, permissions)."""


def job_time_limit_s(settings: Settings, params: dict) -> int:
    """The job's own time limit when it asked for one, never more than the server's JOB_TIME_LIMIT_S."""
    return min(params.get("time_limit_s") or settings.JOB_TIME_LIMIT_S, settings.JOB_TIME_LIMIT_S)


class JobRun:
    """A job step's hold on its record (SHARED_DIR/jobs/<id>.json), the one protocol of predict, train and synth.

    Entering reads the record (JobCancelledError when the job is finished already); `start()` marks it running
    and fixes the deadline (started_at + the job's time limit); `report()` records progress and stops the step
    (JobCancelledError) when the job was cancelled or failed elsewhere, or ran past its deadline, which then
    fails the job (and the shard) with a message saying what to change. Failing the job on other errors stays
    with the Celery task, which knows whether a retry is left.

        with JobRun(settings, job_id, unit="distinct pairs") as run:
            config = config_from(run.params)   # a bad request fails here, before the job is started
            run.start()
            label(config, on_progress=run.report)
            run.succeed(artifacts, result)

    Args:
        settings: SHARED_DIR and JOB_TIME_LIMIT_S are read.
        job_id: the job.
        unit: what progress counts, for messages ("rows", "steps", "distinct pairs").
        shard_index: the predict shard this step judges (progress and failure go to the shard), or None.
        deadline_hint: what to change when the job runs past its time limit.
    """

    def __init__(
        self,
        settings: Settings,
        job_id: str,
        *,
        unit: str,
        shard_index: int | None = None,
        deadline_hint: str = "raise time_limit_s",
    ) -> None:
        self.settings = settings
        self.job_id = job_id
        self.unit = unit
        self.shard_index = shard_index
        self.deadline_hint = deadline_hint
        self.store = JobStore(settings.SHARED_DIR)
        self.time_limit_s: int | None = None
        self.deadline: float | None = None

    def __enter__(self) -> JobRun:
        self.record = self.store.read(self.job_id)
        if self.record.terminal:
            raise JobCancelledError(f"job {self.job_id} is already {self.record.state}")
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    @property
    def params(self) -> dict:
        return self.record.params

    @property
    def shard(self):
        return next(shard for shard in self.record.shards if shard.index == self.shard_index)

    def start(self, *, deadline: bool = True, **shard_fields) -> JobRecord:
        """Mark the job (or this shard, with `shard_fields`) running; with `deadline`, stop it at its time limit."""
        if self.shard_index is None:
            self.record = self.store.start(self.job_id)
        else:
            self.record = self.store.update_shard(self.job_id, self.shard_index, state="running", **shard_fields)
        if deadline:
            self.time_limit_s = job_time_limit_s(self.settings, self.record.params)
            self.deadline = (self.record.started_at or utc_now()).timestamp() + self.time_limit_s
        return self.record

    def report(self, done: int, total: int, *, result: dict | None = None) -> None:
        """Record progress, then stop when the job is no longer wanted (see `check`)."""
        if self.shard_index is not None:
            record = self.store.update_shard(self.job_id, self.shard_index, done=done)
        else:

            def change(current: JobRecord) -> None:
                current.progress.done, current.progress.total = done, total
                if result is not None:
                    current.result = dict(result)

            record = self.store.update(self.job_id, change)
        if self.shard_index is not None:  # the job's progress: every shard's rows
            self._stop_if_unwanted(record, past_deadline_counts=True)
        else:  # the last report of a whole-job step is its end: finishing beats failing at the deadline
            self._stop_if_unwanted(record, past_deadline_counts=done < total, progress=(done, total))

    def check(self) -> None:
        """Stop (JobCancelledError) when the job was cancelled or failed elsewhere, or ran past its deadline."""
        self._stop_if_unwanted(self.store.read(self.job_id), past_deadline_counts=True)

    def succeed(self, *, artifacts: list[str], result: dict) -> JobRecord:
        return self.store.succeed(self.job_id, artifacts=artifacts, result=result)

    def _where(self, record: JobRecord, progress: tuple[int, int] | None) -> str:
        done, total = progress or (record.progress.done, record.progress.total)
        where = f"after {done} of {total} {self.unit}"
        return where if self.shard_index is None else f"{where} (shard {self.shard_index})"

    def _stop_if_unwanted(
        self, record: JobRecord, *, past_deadline_counts: bool, progress: tuple[int, int] | None = None
    ) -> None:
        if record.terminal:
            raise JobCancelledError(f"job {self.job_id} was {record.state} {self._where(record, progress)}")
        if past_deadline_counts and self.deadline is not None and time.time() > self.deadline:
            reason = (
                f"the job ran longer than its time limit of {self.time_limit_s}s and was stopped"
                f" {self._where(record, progress)}; {self.deadline_hint}"
            )
            self._fail(reason)
            raise JobCancelledError(reason)

    def _fail(self, reason: str) -> None:
        if self.shard_index is None:
            self.store.fail(self.job_id, reason)
            return

        def change(record: JobRecord) -> None:
            shard = next(shard for shard in record.shards if shard.index == self.shard_index)
            shard.state, shard.error = "failed", reason
            record.state, record.error = "failed", reason

        self.store.update(self.job_id, change)


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
