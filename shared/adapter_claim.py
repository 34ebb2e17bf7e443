"""Who may write adapters/<name>/: the train job whose id is in its claim, train_job.json.

The gateway claims the name when it accepts a train job (POST /v1/jobs/train, before 202); the worker that runs
the job finds its own claim and goes on, and a job submitted without one (the CLI, an older gateway) claims
when it starts. The claim is created atomically (a finished temp file hard-linked into place, which fails when
the file exists), so of any number of concurrent submissions or workers exactly one gets a name.

A name stays taken by its claim while the job is queued or running, and for good once it wrote a finished
adapter (metrics.json or adapter_config.json) or when its job record is gone. It is released when its job
failed or was cancelled without finishing: the next submission for the name takes the claim over, and moves
away what the failed job left (a checkpoint) once that job has been over for RELEASE_GRACE_S, so that a worker
still stopping cannot write into the new job's folder. Release happens only at the gateway, under a lock.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from datetime import datetime
from pathlib import Path

from shared.artifacts import ADAPTER_CONFIG_NAME, ADAPTERS_DIR_NAME, METRICS_NAME, TRAIN_JOB_OWNER_NAME
from shared.errors import UserError
from shared.job_store import JobNotFoundError, JobStore
from shared.schemas import ACTIVE_STATES, JobRecord, utc_now
from shared.storage import atomic_creator, file_lock, resolve_inside

RELEASE_GRACE_S = 60.0
RELEASABLE_STATES = ("failed", "cancelled")
# What a finished job leaves: the name is then its adapter's for good.
FINISHED_MARKERS = (METRICS_NAME, ADAPTER_CONFIG_NAME)
_CLAIM_NAMES = (TRAIN_JOB_OWNER_NAME, f".{TRAIN_JOB_OWNER_NAME}.")  # the claim, and one being made right now


class AdapterNameTakenError(UserError, ValueError):
    """adapters/<name>/ belongs to another job or holds an adapter; the message says to choose another name."""


def claim_owner(folder: Path) -> str | None:
    """The job id in adapters/<name>/train_job.json; None when it cannot be read (left half-written)."""
    try:
        owner = json.loads((folder / TRAIN_JOB_OWNER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return owner.get("job_id") if isinstance(owner, dict) else None


def holds_unclaimed_files(folder: Path) -> bool:
    """Whether the folder holds anything besides a claim (or the temp file of a claim being made)."""
    return any(not path.name.startswith(_CLAIM_NAMES) for path in folder.iterdir())


def _owner_record(shared_dir: Path, owner: str | None) -> JobRecord | None:
    """The claiming job's record; None when it is gone (a claim outlives its record: still not ours)."""
    if owner is None:
        return None
    try:
        return JobStore(shared_dir).read(owner)
    except (JobNotFoundError, OSError, ValueError):
        return None


def _taken_message(name: str, owner: str | None, record: JobRecord | None) -> str:
    if owner is None:
        return (
            f"adapters/{name} holds an unreadable {TRAIN_JOB_OWNER_NAME}; choose another adapter_name, or delete"
            f" adapters/{name}"
        )
    state = record.state if record else None
    if state in ACTIVE_STATES:
        return f"adapter {name!r} is being written by train job {owner}; choose another adapter_name"
    return f"adapter {name!r} was written by train job {owner} ({state or 'record gone'}); choose another adapter_name"


def claim_tenant(folder: Path) -> str | None:
    """The tenant recorded in adapters/<name>/train_job.json (whose adapter it is); None: none recorded (the
    CLI, a hand-copied adapter, a claim made before tenants), the admin's."""
    try:
        owner = json.loads((folder / TRAIN_JOB_OWNER_NAME).read_text())
    except (OSError, ValueError):
        return None
    tenant = owner.get("tenant") if isinstance(owner, dict) else None
    return tenant if isinstance(tenant, str) else None


def claim_adapter_dir(shared_dir: Path, name: str, job_id: str, *, tenant: str | None = None) -> Path:
    """adapters/<name>/, claimed for `job_id` (of `tenant`); the same job's own claim is accepted (a redelivered
    message).

    Raises:
        AdapterNameTakenError: another job claimed the folder, or it holds files no train job claimed (an
            adapter put there by hand or by the CLI).
    """
    folder = resolve_inside(Path(shared_dir) / ADAPTERS_DIR_NAME, name)
    owner_path = folder / TRAIN_JOB_OWNER_NAME
    if folder.exists() and not folder.is_dir():
        raise AdapterNameTakenError(f"adapters/{name} exists already; choose another adapter_name")
    folder.mkdir(parents=True, exist_ok=True)
    if not owner_path.exists() and holds_unclaimed_files(folder):
        raise AdapterNameTakenError(f"adapters/{name} exists already; choose another adapter_name")
    try:
        with atomic_creator(owner_path) as handle:
            handle.write(json.dumps({"job_id": job_id} | ({"tenant": tenant} if tenant is not None else {})))
    except FileExistsError:
        owner = claim_owner(folder)
        if owner != job_id:
            raise AdapterNameTakenError(_taken_message(name, owner, _owner_record(shared_dir, owner))) from None
    return folder


def _releasable(folder: Path, record: JobRecord | None, now: datetime) -> bool:
    """A claim of a failed or cancelled job that finished nothing; with leftovers only after the grace time."""
    if record is None or record.state not in RELEASABLE_STATES:
        return False
    if any((folder / marker).exists() for marker in FINISHED_MARKERS):
        return False
    if not holds_unclaimed_files(folder):
        return True
    finished_at = record.finished_at
    return finished_at is not None and (now - finished_at).total_seconds() >= RELEASE_GRACE_S


def claim_adapter_name(shared_dir: Path, name: str, job_id: str, *, tenant: str | None = None) -> Path:
    """The gateway's claim of adapters/<name>/ for a job it is about to accept, taking over a released one.

    Raises:
        AdapterNameTakenError: the name is taken (see the module docstring); the message says whose it is.
    """
    adapters_dir = Path(shared_dir) / ADAPTERS_DIR_NAME
    folder = resolve_inside(adapters_dir, name)
    with file_lock(adapters_dir / ".locks" / f"{name}.lock"):  # one gateway release-and-claim at a time
        owner = claim_owner(folder) if (folder / TRAIN_JOB_OWNER_NAME).is_file() else None
        record = _owner_record(shared_dir, owner) if owner not in (None, job_id) else None
        if record is not None and _releasable(folder, record, utc_now()):
            if holds_unclaimed_files(folder):
                # Moved away first (one rename), so the new job never sees half-deleted leftovers.
                aside = adapters_dir / f".released-{name}-{uuid.uuid4().hex[:8]}"
                folder.rename(aside)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    (folder / TRAIN_JOB_OWNER_NAME).unlink()
        return claim_adapter_dir(shared_dir, name, job_id, tenant=tenant)


def release_adapter_name(shared_dir: Path, name: str, job_id: str) -> None:
    """Undo `claim_adapter_name` for a job that was not accepted after all (its message could not be sent)."""
    adapters_dir = Path(shared_dir) / ADAPTERS_DIR_NAME
    folder = resolve_inside(adapters_dir, name)
    with file_lock(adapters_dir / ".locks" / f"{name}.lock"):
        if claim_owner(folder) != job_id or holds_unclaimed_files(folder):
            return
        with contextlib.suppress(FileNotFoundError):
            (folder / TRAIN_JOB_OWNER_NAME).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()


def discard_unfinished_adapter(shared_dir: Path, record: JobRecord) -> bool:
    """Remove adapters/<name>/ of a train job that is being deleted, when that job claimed it and finished nothing
    there (a claim, checkpoints): with its record gone the folder would stay listed as training and its name taken
    for good. A finished adapter outlives its job (DELETE /v1/adapters/{name} removes it). Returns whether it did.
    """
    if record.kind != "train":
        return False
    name = record.params.get("adapter_name") or record.id
    adapters_dir = Path(shared_dir) / ADAPTERS_DIR_NAME
    try:
        folder = resolve_inside(adapters_dir, name)
    except ValueError:
        return False
    with file_lock(adapters_dir / ".locks" / f"{name}.lock"):
        if not folder.is_dir() or claim_owner(folder) != record.id:
            return False
        if any((folder / marker).exists() for marker in FINISHED_MARKERS):
            return False
        # One rename first, so a listing or a new claim never sees a half-deleted folder.
        aside = adapters_dir / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
        folder.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
        return True
