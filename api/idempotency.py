"""Idempotent job submission: `Idempotency-Key` → the job it created, kept in SHARED_DIR/jobs/.idempotency/.

The mapping lives in shared storage beside the job records, so it survives gateway and Redis restarts. A key is
held under a file lock while its job is created and sent, so two concurrent requests with one key create one
job. The same key with a different request is refused (409): a key names one request, not a slot to reuse.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from api.tenants import ADMIN_TENANT
from shared.artifacts import JOBS_DIR_NAME
from shared.job_store import IDEMPOTENCY_DIR_NAME
from shared.storage import atomic_write_text, file_lock

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces, like a UUID or a ULID
KEY_HINT = "send a fresh random value (e.g. a UUID, 1 to 255 printable ASCII characters) for each new job"


class IdempotencyKeyError(ValueError):
    """The header is malformed (422)."""


class IdempotencyConflictError(ValueError):
    """The key was used for a different request (409)."""


@dataclass(frozen=True)
class Claim:
    """What the caller does under the key's lock: `job_id` set means replay that job, else create one."""

    job_id: str | None
    remember: Callable[[str], None]


def request_fingerprint(kind: str, body: dict) -> str:
    """The same job kind and body (field order aside) give the same fingerprint."""
    canonical = json.dumps({"kind": kind, "body": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    """Idempotency keys of job submissions.

    Args:
        shared_dir: the shared storage root (SHARED_DIR).
    """

    def __init__(self, shared_dir: Path) -> None:
        self.root = Path(shared_dir) / JOBS_DIR_NAME / IDEMPOTENCY_DIR_NAME

    def _path(self, key: str, tenant: str) -> Path:
        # Hashed: the key is client-chosen text, the file name must be safe and fixed-length. Per tenant: two
        # tenants choosing the same key never meet; the admin's keep the name they had before tenants.
        scoped = key if tenant == ADMIN_TENANT else f"{tenant}\n{key}"
        return self.root / f"{hashlib.sha256(scoped.encode()).hexdigest()}.json"

    @contextmanager
    def claim(self, key: str, *, kind: str, body: dict, tenant: str) -> Iterator[Claim]:
        """Hold `key` of `tenant` for the block; the claim says which job the key already names, or lets the caller
        record one.

        Raises:
            IdempotencyKeyError: the key is malformed.
            IdempotencyConflictError: the key names a job created by a different request.
        """
        if not KEY_PATTERN.match(key):
            raise IdempotencyKeyError(f"the Idempotency-Key header is malformed; {KEY_HINT}")
        fingerprint = request_fingerprint(kind, body)
        path = self._path(key, tenant)
        with file_lock(self.root / ".locks" / path.with_suffix(".lock").name):
            stored = json.loads(path.read_text()) if path.exists() else None
            if stored is not None and stored["fingerprint"] != fingerprint:
                raise IdempotencyConflictError(
                    f"this Idempotency-Key was already used for a different request ({stored['kind']} job"
                    f" {stored['job_id']}); {KEY_HINT}, or repeat the original request unchanged to get that job"
                )

            def remember(job_id: str) -> None:
                record = {"job_id": job_id, "kind": kind, "fingerprint": fingerprint}
                atomic_write_text(path, json.dumps(record))
                # The key expires with its job: JobStore.delete (DELETE, retention) follows this link to it.
                atomic_write_text(self.root / "by-job" / job_id, path.name)

            yield Claim(job_id=stored["job_id"] if stored else None, remember=remember)

    def forget(self, key: str, *, tenant: str) -> None:
        """Drop a key whose job could not be enqueued, so that a retry with the same key creates the job."""
        self._path(key, tenant).unlink(missing_ok=True)
