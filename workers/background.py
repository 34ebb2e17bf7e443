"""A worker's background thread: announce the worker in Redis every heartbeat and, when it holds the sweeper's
lock, run the sweeper (workers/sweeper/).

A thread, not a Celery task: a solo-pool worker busy with a chunk for an hour runs no other task, but its threads
keep running (the judge's compute releases the GIL). Every worker runs one; a lock in Redis (expiring after three
sweep intervals) elects one sweeper, so a killed leader is replaced by itself.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable

import redis

from shared import clock
from shared.job_store import JobStore
from shared.process_tree import descendants
from shared.settings import Settings
from shared.worker_presence import (
    SWEEPER_LOCK_NAME,
    WorkerIdentity,
    announce,
    announcements,
    redis_client,
    withdraw,
)
from workers.common.metrics import HEARTBEATS
from workers.jobs.run import running_step
from workers.sweeper import Send, Sweeper

log = logging.getLogger(__name__)
HARD_STOP_EXIT_CODE = 75  # EX_TEMPFAIL: scripts/stack.sh restarts a worker that exits with it


def exit_hard() -> None:
    """Kill this process's descendants (vLLM's engine process holds the GPU) and exit at once.

    Not a kill of the process group: under scripts/stack.sh the group holds the loop that restarts the worker, and
    as PID 1 of a container the process ignores a signal it sends itself.
    """
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(HARD_STOP_EXIT_CODE)


class WorkerBackground:
    """The heartbeat and, for the elected worker, the sweeper.

    Args:
        settings: REDIS_URL, REDIS_KEY_PREFIX, WORKER_HEARTBEAT_S and SWEEP_INTERVAL_S are read.
        worker: this worker's name (as Celery reports it in task requests).
        queues: the queues this worker consumes.
        send: sends one task (the sweeper's re-queues).
        hard_stop: how the watchdog stops the worker (tests pass their own).
        identity: what the worker announces about its process and storage (workers/identity.py).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        worker: str,
        queues: list[str],
        send: Send,
        hard_stop: Callable[[], None] | None = None,
        identity: WorkerIdentity | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.hard_stop = hard_stop or exit_hard
        self.worker = worker
        self.queues = sorted(queues)
        self.client = redis_client(settings)
        self.sweeper = Sweeper(settings, send=send, announcements=lambda: announcements(self.client, settings))
        self.idle_since: float | None = clock.now()  # set by the task signals (workers/celery_app.py)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._first_beat_done = threading.Event()  # the sweeper starts once this worker has announced itself
        self._lock = None
        self._owner = uuid.uuid4().hex

    def start(self) -> None:
        # The sweep has a thread of its own: a long pass (many active jobs, a retention pass over old records)
        # must never delay the heartbeat, or this worker would look gone and its own chunks be re-queued.
        self._threads = [
            threading.Thread(target=self._run, name="arena-heartbeat", daemon=True),
            threading.Thread(target=self._run_sweeps, name="arena-sweeper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            withdraw(self.client, self.settings, self.worker)
            if self._lock is not None:
                self._lock.release()
        except (redis.RedisError, redis.exceptions.LockError):
            pass  # the announcement and the lock expire by themselves

    def task_started(self) -> None:
        self.idle_since = None

    def task_finished(self) -> None:
        self.idle_since = clock.now()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._first_beat_done.set()
            self._stop.wait(self.settings.WORKER_HEARTBEAT_S)

    def _run_sweeps(self) -> None:
        interval = self.settings.SWEEP_INTERVAL_S
        if not interval:
            return
        self._first_beat_done.wait()
        while not self._stop.is_set():
            self.sweep_if_leading()
            self._stop.wait(interval)

    def beat(self) -> None:
        """One heartbeat: the watchdog, the offset to Redis' clock, this worker's announcement."""
        self.watchdog()
        try:
            clock.sync(self.client)  # the offset to Redis' clock, fresh for this beat's times and the sweep
            announce(
                self.client, self.settings, self.worker, self.queues, idle_since=self.idle_since,
                identity=self.identity,
            )  # fmt: skip
            HEARTBEATS.inc()
        except redis.RedisError as exc:  # Redis down: announce again once it is back
            log.warning("heartbeat: Redis does not answer (%s); retrying", type(exc).__name__)
        except Exception:
            log.exception("heartbeat failed; retrying at the next beat")

    def sweep_if_leading(self) -> bool:
        """One sweep when this worker holds (or takes) the sweeper's lock; returns whether it swept."""
        try:
            if not self._lead():
                return False
            self.sweeper.sweep()
            return True
        except redis.RedisError as exc:  # Redis down: the lock will have expired by the time it is back
            log.warning("sweeper: Redis does not answer (%s); retrying", type(exc).__name__)
            self._lock = None
        except Exception:
            log.exception("sweep failed; retrying at the next one")
        return False

    def watchdog(self) -> bool:
        """Stop the worker hard when its step is still inside one batch HARD_STOP_GRACE_S past its time limit, or
        a score task runs past SCORE_TASK_TIME_LIMIT_S.

        The time limit is checked between batches; a batch that never returns (a hung engine, a pathological row)
        would hold the worker forever. The job fails with the reason first, then the process exits for its
        supervisor to restart it. Returns whether it stopped (only when `hard_stop` returns, i.e. in tests).
        """
        step = running_step()
        grace = self.settings.HARD_STOP_GRACE_S if step is None or step.grace_s is None else step.grace_s
        if step is None or clock.now() < step.deadline + grace:
            return False
        if step.job_id is None:  # a score task: no job record to fail, the gateway stopped waiting long ago
            log.error(
                "score task %s ran past SCORE_TASK_TIME_LIMIT_S=%ss; stopping the worker hard for a restart",
                step.task_id,
                step.time_limit_s,
            )
            try:
                withdraw(self.client, self.settings, self.worker)
            except Exception:
                log.warning("could not withdraw this worker's announcement before its hard stop", exc_info=True)
            finally:
                self.hard_stop()
            return True
        reason = (
            f"the job ran longer than its time limit of {step.time_limit_s}s and was stopped hard: one batch was still"
            f" running {grace:.0f}s past the limit, so the worker was restarted; lower JUDGE_CHUNK_PAIRS or split the"
            " dataset, or raise time_limit_s"
        )
        log.error("job %s: %s", step.job_id, reason)
        try:
            store = JobStore(self.settings.SHARED_DIR)
            if step.chunk_index is not None and step.task_id is not None:
                store.fail(step.job_id, reason, chunk=(step.chunk_index, step.task_id))
            else:
                store.fail(step.job_id, reason, task_id=step.task_id)
            withdraw(self.client, self.settings, self.worker)
        except Exception:
            log.exception("could not record the hard stop of job %s", step.job_id)
        finally:
            self.hard_stop()
        return True

    def _lead(self) -> bool:
        """Hold (or take) the sweeper's lock; true while this worker is the one sweeper."""
        ttl = max(3 * self.settings.SWEEP_INTERVAL_S, 3 * self.settings.WORKER_HEARTBEAT_S)
        name = f"{self.settings.REDIS_KEY_PREFIX}{SWEEPER_LOCK_NAME}"
        if self._lock is not None:
            try:
                self._lock.reacquire()
                return True
            except redis.exceptions.LockError:
                self._lock = None
        lock = self.client.lock(name, timeout=ttl, blocking=False, thread_local=False)
        if lock.acquire(token=self._owner):
            log.info("this worker (%s) is now the sweeper", self.worker)
            self._lock = lock
            return True
        return False
