"""Whether the worker holding a step is still there: its lease, its heartbeats, and the process instance that claimed
the step (a name back from another process is a restart)."""

from __future__ import annotations

from datetime import datetime

from shared.settings import Settings
from shared.worker_presence import Announcement


class WorkerLiveness:
    """What the sweeper knows of the workers between passes.

    A worker counts as gone only after missing for worker_gone_s, so a Redis restart (which forgets every
    announcement) does not look like deaths; a restarted one (same name, another instance) is gone at once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.announced: dict[str, Announcement] = {}
        # When each worker named by a record was first found missing.
        self._missing_since: dict[str, float] = {}

    def observe(self, announced: dict[str, Announcement]) -> None:
        """The workers announced now, at the start of a pass."""
        self.announced = announced
        for name in list(self._missing_since):
            if name in announced:
                del self._missing_since[name]

    def why_dead(
        self, worker: str | None, lease_until: datetime | None, instance: str | None, *, now: float
    ) -> str | None:
        """Why a step held by `worker` (process `instance`, when the claim recorded it) counts as dead now, or None
        while it may still be running."""
        if lease_until is not None and lease_until.timestamp() < now:
            return f"its lease expired at {lease_until:%H:%M:%S} UTC (no progress for LEASE_S={self.settings.LEASE_S}s)"
        announced = self.announced.get(worker) if worker is not None else None
        if instance is not None and announced is not None and announced.identity is not None:
            if announced.identity.instance != instance:
                # The name is back, from another process (a restart loop, make down && make up, compose restart,
                # OOM): no process holds the claim any more. Dead at once, not after worker_gone_s or the lease.
                return f"its worker {worker} restarted (the process that claimed it is gone; a new one uses the name)"
        if worker is None or worker in self.announced:
            return None
        missing_since = self._missing_since.setdefault(worker, now)
        if now - missing_since >= self.settings.worker_gone_s:
            return f"its worker {worker} stopped answering (no heartbeat for {self.settings.worker_gone_s:.0f}s)"
        return None
