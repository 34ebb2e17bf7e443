"""One clock for what two hosts decide together: Redis' own clock (its TIME command).

A lease is written by a worker and judged by the sweeper on another host; a gateway records when it sent a task and
the sweeper decides it was lost; a predict job's deadline is fixed by its first chunk's worker and checked by every
other. Compared on each host's wall clock, a host 10 minutes off would see every lease expired (or none), and fail
or re-queue work that is fine. So every process keeps the offset between Redis' clock and its own and takes each
such timestamp with `now()`: its local time plus that offset. Workers measure the offset at start and at each
heartbeat, the gateway at most every SYNC_INTERVAL_S when it reads the workers' announcements; two hosts then agree
within a Redis round trip, whatever their own clocks say. A process that never reached Redis (the CLI, a test without
Redis) uses its own clock, which is then the only one that matters.

Durations on one host (a step's time on the worker, the sweeper's own grace periods) use time.monotonic() instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 30.0  # the gateway's refresh; drift between two refreshes is micro- to milliseconds


def _system_time() -> float:
    return time.time()  # looked up at each call, so a test's patched time.time is this host's clock too


local_time: Callable[[], float] = _system_time  # this host's clock; tests replace it with a skewed one

_lock = threading.Lock()
_offset = 0.0
_synced_at: float | None = None  # time.monotonic() of the last measurement
_tried_at: float | None = None  # time.monotonic() of sync_if_stale's last try


def now() -> float:
    """Seconds since the epoch on the one clock (Redis' time, as measured from this process)."""
    return local_time() + _offset


def offset() -> float:
    """Redis' clock minus this host's, in seconds, as last measured (0.0 before the first)."""
    return _offset


def sync(client: redis.Redis) -> float:
    """Measure the offset to Redis' clock now (half the round trip is the error); returns it.

    Raises:
        redis.RedisError: Redis does not answer; the last offset stays.
    """
    global _offset, _synced_at
    before = local_time()
    seconds, microseconds = client.time()
    after = local_time()
    measured = seconds + microseconds / 1e6 - (before + after) / 2
    with _lock:
        if abs(measured - _offset) > 1.0:
            log.info(
                "clock: this host's clock is %.1fs %s Redis'", abs(measured), "behind" if measured > 0 else "ahead of"
            )
        _offset, _synced_at = measured, time.monotonic()
    return measured


def sync_if_stale(client: redis.Redis, *, max_age_s: float = SYNC_INTERVAL_S) -> None:
    """sync() when the last measurement is older than `max_age_s`; a Redis that does not answer keeps the old one."""
    global _tried_at
    tried_at = _tried_at
    if tried_at is not None and time.monotonic() - tried_at < max_age_s:
        return
    _tried_at = time.monotonic()  # a Redis that is down is not asked again at every call
    try:
        sync(client)
    except redis.RedisError as exc:
        log.debug("clock: Redis did not answer TIME (%s); keeping the last offset", type(exc).__name__)


def reset() -> None:
    """Forget the offset (tests that play several hosts in one process)."""
    global _offset, _synced_at, _tried_at
    with _lock:
        _offset, _synced_at, _tried_at = 0.0, None, None
