"""Job records as JSON files in SHARED_DIR/jobs/: written by the gateway and the workers, read by GET /v1/jobs.

Records outlive Redis: the broker carries work, these files carry the truth about it. Every change is a
read-modify-write under a file lock, written atomically; a terminal state (succeeded, failed, cancelled)
is never left again, so a late chunk or a repeated message cannot resurrect a finished job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from shared.artifacts import JOBS_DIR_NAME, SYNTH_DIR_NAME
from shared.creation_index import NO_TENANT, CreationIndex
from shared.schemas import ChunkRecord, JobRecord, utc_now
from shared.storage import atomic_write_text, file_lock, job_output_dir, job_record_path, redact_host_paths

# Idempotency-Key entries (api/idempotency.py) live beside the records; by-job/<job id> names a job's entry, so that
# deleting a job (DELETE, retention) deletes its key too.
IDEMPOTENCY_DIR_NAME = ".idempotency"
# The index of unfinished jobs: .active/<tenant>/<job id>, one empty file each, made with the record and removed when
# it turns terminal. The sweeper and the per-tenant cap read it instead of every record ever written.
ACTIVE_DIR_NAME = ".active"
# The index of creation order (shared/creation_index.py): GET /v1/jobs reads only the records of its page.
BY_CREATED_DIR_NAME = ".by_created"
_INDEX_BUILT = ".built"


class JobNotFoundError(KeyError):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job {self.job_id!r}; list jobs with GET /v1/jobs"


class JobStore:
    """Read and change job records under `shared_dir/jobs/`.

    Args:
        shared_dir: the shared storage root (SHARED_DIR).
    """

    def __init__(self, shared_dir: Path) -> None:
        self.shared_dir = Path(shared_dir)
        self.jobs_dir = self.shared_dir / JOBS_DIR_NAME
        self.created = CreationIndex(
            self.jobs_dir / BY_CREATED_DIR_NAME, lock=self.jobs_dir / ".locks" / "created-index.lock", scan=self._scan
        )

    def _lock_path(self, job_id: str) -> Path:
        return self.jobs_dir / ".locks" / f"{job_id}.lock"

    def create(self, record: JobRecord) -> JobRecord:
        path = job_record_path(self.shared_dir, record.id)
        if path.exists():
            raise FileExistsError(f"job {record.id} exists already")
        # Indexed first: a record is never unlisted, nor unfinished without its marker.
        self.created.add(record)
        if not record.terminal:
            self._mark_active(record)
        try:
            atomic_write_text(path, record.model_dump_json(indent=1))
        except OSError:  # a full disk, say: no marker stays behind without its record
            self._unmark_active(record.tenant, record.id)
            self.created.remove(record)
            raise
        return record

    # --- the index of unfinished jobs ----------------------------------------------------------------------

    def _active_root(self) -> Path:
        root = self.jobs_dir / ACTIVE_DIR_NAME
        if not (root / _INDEX_BUILT).exists():
            self._build_active_index(root)
        return root

    def _build_active_index(self, root: Path) -> None:
        """Once per SHARED_DIR (records written before the index existed): one pass over every record."""
        with file_lock(self.jobs_dir / ".locks" / "active-index.lock"):
            if (root / _INDEX_BUILT).exists():
                return
            root.mkdir(parents=True, exist_ok=True)
            for record in self._scan():
                if not record.terminal:
                    self._marker(record.tenant, record.id, root=root).touch()
            (root / _INDEX_BUILT).touch()

    def _marker(self, tenant: str | None, job_id: str, *, root: Path | None = None) -> Path:
        folder = (root or self.jobs_dir / ACTIVE_DIR_NAME) / (tenant or NO_TENANT)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / job_id

    def _mark_active(self, record: JobRecord) -> None:
        self._marker(record.tenant, record.id, root=self._active_root()).touch()

    def _unmark_active(self, tenant: str | None, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._marker(tenant, job_id).unlink()

    def active_ids(self, *, tenant: str | None = None) -> list[str]:
        """Ids of unfinished jobs (of `tenant` when given), from the index: no record is read."""
        root = self._active_root()
        folders = [root / tenant] if tenant is not None else [path for path in root.iterdir() if path.is_dir()]
        return [entry.name for folder in folders if folder.is_dir() for entry in os.scandir(folder)]

    def active(self) -> Iterator[JobRecord]:
        """The unfinished jobs' records; a marker whose record is gone or finished is dropped (a crash between
        the two writes)."""
        root = self._active_root()
        for folder in [path for path in root.iterdir() if path.is_dir()]:
            for entry in list(os.scandir(folder)):
                try:
                    record = self.read(entry.name)
                except (JobNotFoundError, OSError, ValueError):
                    record = None
                if record is None or record.terminal:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    continue
                yield record

    def active_lock(self, tenant: str | None):
        """Held while a tenant's unfinished jobs are counted and one is added (MAX_ACTIVE_JOBS_PER_TENANT)."""
        return file_lock(self.jobs_dir / ".locks" / f"active-{tenant or NO_TENANT}.lock")

    def inputs_in_use(self) -> tuple[set[str], set[str]]:
        """Dataset ids and adapter names that unfinished jobs read or write (DELETE answers 409 for those)."""
        datasets: set[str] = set()
        adapters: set[str] = set()
        for record in self.active():
            params = record.params
            datasets.update(value for value in (params.get("dataset"), params.get("validation_dataset")) if value)
            datasets.update(extra["dataset"] for extra in params.get("extra_datasets") or [] if extra.get("dataset"))
            if params.get("adapter"):
                adapters.add(params["adapter"])
            calibration = (params.get("calibration") or "").split("/")
            if len(calibration) > 1 and calibration[0] == "adapters":
                adapters.add(calibration[1])
            if record.kind == "train":
                adapters.add(params.get("adapter_name") or record.id)
        return datasets, adapters

    # --- deletion ------------------------------------------------------------------------------------------

    def delete(self, job_id: str) -> None:
        """Remove the job's record, its files (submissions/<id>/, synth/<id>/) and its Idempotency-Key. Moved
        aside first (one rename each), so nothing half-deleted is ever listed."""
        try:
            record = self.read(job_id)
        except JobNotFoundError:
            record = None
        with file_lock(self._lock_path(job_id)):
            with contextlib.suppress(FileNotFoundError):
                job_record_path(self.shared_dir, job_id).unlink()
        if record is not None:
            self._unmark_active(record.tenant, job_id)
            self.created.remove(record)
        else:
            self.created.remove_id(job_id)
        for folder in (job_output_dir(self.shared_dir, job_id), self.shared_dir / SYNTH_DIR_NAME / job_id):
            if folder.exists():
                aside = folder.with_name(f".deleted-{folder.name}")
                with contextlib.suppress(OSError):
                    folder.rename(aside)
                    folder = aside
                shutil.rmtree(folder, ignore_errors=True)
        link = self.jobs_dir / IDEMPOTENCY_DIR_NAME / "by-job" / job_id
        with contextlib.suppress(OSError):
            entry = link.read_text().strip()
            if entry and "/" not in entry:
                (self.jobs_dir / IDEMPOTENCY_DIR_NAME / entry).unlink(missing_ok=True)
        link.unlink(missing_ok=True)
        self._lock_path(job_id).unlink(missing_ok=True)

    def read(self, job_id: str) -> JobRecord:
        try:
            return JobRecord.model_validate_json(job_record_path(self.shared_dir, job_id).read_text())
        except FileNotFoundError:
            raise JobNotFoundError(job_id) from None

    def _scan(self) -> Iterator[JobRecord]:
        for path in self.jobs_dir.glob("*.json"):
            try:
                yield JobRecord.model_validate_json(path.read_text())
            except (OSError, ValueError):
                continue  # a record being replaced right now, or not ours

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | None = None,
        limit: int = 100,
        tenant: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[JobRecord]:
        """Newest first; with `tenant`, only that tenant's jobs (None: everyone's, as the admin sees them); with
        `after` (created_at, id) of a job, only those older than it (the next page). Reads the records of the page
        (and those a filter skips), not every record: they come newest first from the index of creation order."""
        records: list[JobRecord] = []
        if limit <= 0:
            return records
        for record in self.created.newest_first(self.read, tenant=tenant, after=after):
            if (kind is None or record.kind == kind) and (state is None or record.state == state):
                records.append(record)
                if len(records) >= limit:
                    break
        return records

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` to the record in place and store it; a no-op on a terminal record."""
        with file_lock(self._lock_path(job_id)):
            record = self.read(job_id)
            if record.terminal:
                return record
            change(record)
            _redact_host_paths(record, self.shared_dir)
            record.progress.done = sum(chunk.done for chunk in record.chunks) if record.chunks else record.progress.done
            if record.terminal and record.finished_at is None:
                record.finished_at = utc_now()
            atomic_write_text(job_record_path(self.shared_dir, job_id), record.model_dump_json(indent=1))
            if record.terminal:
                self._unmark_active(record.tenant, job_id)
            return record

    # --- transitions -------------------------------------------------------------------------------------

    def mark_sent(self, job_id: str, *, task_ids: list[str], at: datetime | None = None) -> JobRecord:
        """Record that the tasks `task_ids` were sent: the job is dispatched, those chunks have a `sent_at`.

        Called after the send, so a record that never got here (its sender died in between) is what the sweeper
        sends again; a task sent twice that way is told apart by its id, which the record holds.
        """
        sent = set(task_ids)

        def change(record: JobRecord) -> None:
            now = at or utc_now()
            if record.state == "queued":
                record.state = "dispatched"
            if record.chunks:
                for chunk in record.chunks:
                    if chunk.task_id in sent:  # the latest send: a lost task is looked for again from here
                        chunk.sent_at = now
                if record.dispatched_at is None and all(chunk.sent_at for chunk in record.chunks):
                    record.dispatched_at = now
            elif record.task_ids and record.task_ids[-1] in sent:
                record.dispatched_at = now

        return self.update(job_id, change)

    def start(self, job_id: str) -> JobRecord:
        def change(record: JobRecord) -> None:
            if record.state in ("queued", "dispatched"):
                record.state = "running"
                record.started_at = utc_now()

        return self.update(job_id, change)

    def update_chunk(self, job_id: str, index: int, *, if_task_id: str | None = None, **fields) -> JobRecord:
        """Set fields of chunk `index`; a running chunk also marks the job running. With `if_task_id`, only while
        that is still the chunk's current task (a superseded attempt must not touch its successor's chunk)."""

        def change(record: JobRecord) -> None:
            chunk = _chunk(record, index)
            if if_task_id is not None and chunk.task_id != if_task_id:
                return
            for name, value in fields.items():
                setattr(chunk, name, value)
            if fields.get("state") == "running" and record.state in ("queued", "dispatched"):
                record.state = "running"
                record.started_at = record.started_at or utc_now()

        return self.update(job_id, change)

    def fail(
        self, job_id: str, error: str, *, chunk: tuple[int, str] | None = None, task_id: str | None = None
    ) -> JobRecord:
        """Fail the job. With `chunk` (index, task id): only while that task is the chunk's current attempt, and the
        chunk with it; with `task_id` (train, synth): only while it is the job's current task. A superseded attempt
        (re-queued by the sweeper) must not fail its successor's job."""

        def change(record: JobRecord) -> None:
            if task_id is not None and record.task_ids and record.task_ids[-1] != task_id:
                return
            if chunk is not None:
                failed = _chunk(record, chunk[0])
                if failed.task_id != chunk[1]:
                    return
                failed.state = "failed"
                failed.error = error
            record.state = "failed"
            record.error = error

        return self.update(job_id, change)

    def cancel(self, job_id: str) -> JobRecord:
        def change(record: JobRecord) -> None:
            record.state = "cancelled"
            record.error = "cancelled by request"
            for chunk in record.chunks:
                if chunk.state in ("queued", "running"):
                    chunk.state = "cancelled"

        return self.update(job_id, change)

    def succeed(self, job_id: str, *, artifacts: list[str], result: dict) -> JobRecord:
        def change(record: JobRecord) -> None:
            record.state = "succeeded"
            record.artifacts = list(artifacts)
            record.result = dict(result)
            if record.started_at is None:
                record.started_at = record.created_at

        return self.update(job_id, change)


def _redact_host_paths(record: JobRecord, shared_dir: Path) -> None:
    """Host paths out of what clients read: errors (often exception text), results and chunk summaries are
    rewritten on every write by the one rule of `redact_host_paths`, whichever worker step filled them."""
    record.error = redact_host_paths(record.error, shared_dir)
    record.result = redact_host_paths(record.result, shared_dir)
    for chunk in record.chunks:
        chunk.error = redact_host_paths(chunk.error, shared_dir)
        chunk.summary = redact_host_paths(chunk.summary, shared_dir)


def _chunk(record: JobRecord, index: int) -> ChunkRecord:
    for chunk in record.chunks:
        if chunk.index == index:
            return chunk
    raise KeyError(f"job {record.id} has no chunk {index}")
