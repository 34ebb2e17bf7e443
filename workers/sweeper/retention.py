"""Retention: finished jobs and unused datasets older than RETENTION_DAYS are deleted, at most once an hour."""

from __future__ import annotations

from shared.adapter_claim import discard_unfinished_adapter
from shared.dataset_store import DatasetStore
from shared.job_store import JobStore
from shared.settings import Settings

RETENTION_INTERVAL_S = 3600.0


def delete_expired(settings: Settings, store: JobStore, *, now: float) -> list[str]:
    """Delete finished jobs (record, files, Idempotency-Key) and datasets that no unfinished job reads, when older
    than RETENTION_DAYS at `now` (seconds on the one clock); returns what it deleted, one line each."""
    cutoff = now - settings.RETENTION_DAYS * 86400
    actions = []
    # A record is written last when its job ends, so its mtime is a cheap first filter: only records not
    # touched since the cutoff are read at all.
    for path in store.jobs_dir.glob("*.json"):
        try:
            if path.stat().st_mtime >= cutoff:
                continue
            record = store.read(path.stem)
        except (OSError, ValueError, KeyError):
            continue
        ended = record.finished_at or record.created_at
        if record.terminal and ended.timestamp() < cutoff:
            discard_unfinished_adapter(settings.SHARED_DIR, record)  # a finished adapter outlives its job
            store.delete(record.id)
            actions.append(f"job {record.id} ({record.kind}, {record.state}) deleted: finished over RETENTION_DAYS ago")
    datasets = DatasetStore(settings.SHARED_DIR, max_bytes=settings.MAX_UPLOAD_BYTES)
    in_use, _ = store.inputs_in_use()
    for info in datasets.list():
        if info.created_at.timestamp() < cutoff and info.id not in in_use:
            datasets.delete(info.id)
            actions.append(f"dataset {info.id} deleted: older than RETENTION_DAYS and no unfinished job reads it")
    return actions
