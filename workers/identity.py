"""A worker's checks at start, before it takes any task: its name is its own, and its SHARED_DIR is the shared one.

Workers on several hosts share one Redis and one storage (NFS or the like, mounted at SHARED_DIR). Two mistakes
would corrupt jobs quietly, so a worker refuses to start on either, saying what to change:
- **two workers under one name**: job records, leases and the sweeper tell live workers apart by name (and a claim
  records the process instance too, so a worker back under its name is not mistaken for its predecessor). A name is
  claimed in Redis with the worker's announcement; a second process claiming a name whose owner still announces
  itself is refused. A worker restarted after being killed takes its own name back at once on the same machine
  (its predecessor's PID is gone), and after at most `worker_gone_s` elsewhere (a new container).
- **a SHARED_DIR that is not the shared one** (a volume not mounted, another export): the first worker to start
  writes a random id into SHARED_DIR/.arena-storage-id and registers it in Redis; a worker whose SHARED_DIR holds
  another id while a live worker still uses the registered one is refused. With no such worker left (the storage
  was replaced on purpose, e.g. `rm -rf var/shared`), the new id takes over.
It also checks that SHARED_DIR gives what the job protocol needs: a rename that replaces atomically, hard links
(publishing without replacing), and `flock` (the job records' locks).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from shared import clock as one_clock
from shared.artifacts import JOBS_DIR_NAME
from shared.settings import Settings
from shared.storage import atomic_creator
from shared.worker_presence import (
    WorkerIdentity,
    announce,
    announcement_body,
    announcements,
    names_key,
    parse_announcement,
    presence_key,
)

STORAGE_ID_FILE = ".arena-storage-id"
STORAGE_ID_KEY = "arena:storage-id"

_process_instance: str | None = None


def process_instance() -> str | None:
    """This worker process's instance (the random id it announces itself with), once its start was checked; None
    elsewhere (the CLI, tests). Claims record it, so the sweeper tells a restarted worker from its predecessor."""
    return _process_instance


class WorkerStartError(RuntimeError):
    """A configuration this worker must not run with; the message says what to change."""


def pid_space() -> str:
    """This machine's boot and PID namespace: two processes in the same one can see whether the other is alive."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host name is the best there is
        import socket

        return socket.gethostname()
    return f"{boot}:{namespace}"


def probe_shared_storage(shared_dir: Path) -> None:
    """Check that SHARED_DIR is writable and gives atomic rename, hard links and flock.

    Raises:
        WorkerStartError: one of them fails, with what the storage must provide.
    """
    folder = Path(shared_dir) / JOBS_DIR_NAME / ".locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkerStartError(
            f"SHARED_DIR ({shared_dir}) is not writable ({exc.strerror}): mount the shared storage read-write"
        ) from None
    probe = folder / f".probe-{uuid.uuid4().hex}"
    renamed = probe.with_suffix(".renamed")
    linked = probe.with_suffix(".linked")
    step = "writing a file"
    try:
        probe.write_text("probe")
        step = "renaming a file over another (atomic rename)"
        renamed.write_text("old")
        os.replace(probe, renamed)
        if renamed.read_text() != "probe":
            raise OSError(errno.EIO, "the renamed file has the old content")
        step = "hard-linking a file (publishing without replacing)"
        os.link(renamed, linked)
        step = "locking a file with flock"
        with open(renamed, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError as exc:
        raise WorkerStartError(
            f"SHARED_DIR ({shared_dir}) failed {step}: {exc.strerror or exc}. Shared storage must give atomic"
            " rename, hard links and flock across hosts (NFSv4, or NFSv3 with lockd, mounted without"
            " local_lock; see docs/scale-out.md)"
        ) from None
    finally:
        for path in (probe, renamed, linked):
            path.unlink(missing_ok=True)


def storage_id(shared_dir: Path) -> str:
    """The id of the storage at `shared_dir`: written once, by whichever process sees it first."""
    path = Path(shared_dir) / STORAGE_ID_FILE
    if not path.exists():
        try:
            with atomic_creator(path) as handle:
                handle.write(uuid.uuid4().hex + "\n")
        except FileExistsError:
            pass  # another worker wrote it meanwhile: theirs stands
    return path.read_text().strip()


def check_shared_storage(client: redis.Redis, settings: Settings, *, worker: str, storage: str) -> str | None:
    """Compare this worker's storage id with the one registered in Redis; returns a warning when it took over.

    Raises:
        WorkerStartError: another live worker uses the registered storage, and this worker sees another one.
    """
    key = f"{settings.REDIS_KEY_PREFIX}{STORAGE_ID_KEY}"
    client.set(key, storage, nx=True)
    registered = _text(client.get(key))
    if registered == storage:
        return None
    holders = sorted(
        name
        for name, announcement in announcements(client, settings).items()
        if name != worker and announcement.identity is not None and announcement.identity.storage == registered
    )
    if holders:
        raise WorkerStartError(
            f"SHARED_DIR ({settings.SHARED_DIR}) is not the storage the other workers use: it holds storage id"
            f" {storage}, while {', '.join(holders[:3])} use {registered}. Mount the head node's shared storage"
            f" (e.g. over NFS) at SHARED_DIR on this host; see docs/scale-out.md"
        )
    client.set(key, storage)
    return (
        f"the shared storage changed (Redis had storage id {registered}, no live worker uses it): SHARED_DIR"
        f" ({settings.SHARED_DIR}) with id {storage} is the shared storage from now on"
    )


def claim_worker_name(
    client: redis.Redis,
    settings: Settings,
    *,
    worker: str,
    queues: list[str],
    identity: WorkerIdentity,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Take `worker` as this process's name, announcing it; waits while an earlier owner may be dead.

    Raises:
        WorkerStartError: another live process announces itself under this name.
    """
    key = presence_key(settings, worker)
    body = announcement_body(queues, idle_since=one_clock.now(), identity=identity)
    ttl_ms = int(settings.worker_gone_s * 1000)
    deadline = clock() + settings.worker_gone_s + settings.WORKER_HEARTBEAT_S
    first_seen: float | None = None
    while True:
        if client.set(key, body, nx=True, px=ttl_ms):
            client.sadd(names_key(settings), worker)
            return
        raw = client.get(key)
        if raw is None:
            continue  # it expired just now: claim it
        try:
            other = parse_announcement(raw)
        except (ValueError, KeyError, TypeError):
            break  # not an announcement this release understands: take the name
        owner = other.identity
        if owner is None or owner.instance == identity.instance:
            break  # a worker of an older release, or this very process
        if owner.pid_space == identity.pid_space:
            if owner.pid != identity.pid and _alive(owner.pid):
                raise WorkerStartError(_duplicate_message(worker, f"pid {owner.pid} on this machine"))
            break  # its predecessor on this machine, gone (killed, or a restarted container's PID 1)
        if first_seen is None:
            first_seen = other.seen
        elif other.seen != first_seen:  # it keeps announcing itself: alive, elsewhere
            raise WorkerStartError(_duplicate_message(worker, "another machine or container"))
        if clock() > deadline:
            break
        sleep(min(1.0, settings.WORKER_HEARTBEAT_S / 2))
    announce(client, settings, worker, queues, idle_since=one_clock.now(), identity=identity)


def _duplicate_message(worker: str, where: str) -> str:
    return (
        f"another worker is running under the name {worker} ({where}): every worker needs a name of its own."
        ' Start this one with -n NAME@%h, e.g. `STACK_WORKERS="cpu cpu" make up` names them cpu-1@HOST and'
        " cpu-2@HOST; compose names each container's worker after its own host name"
    )


def _alive(pid: int) -> bool:
    """Whether `pid` runs: a killed worker whose parent has not reaped it yet (a PID 1 that never reaps, in a
    container or a sandbox) is a zombie that signal 0 still reaches, and it holds no name."""
    from shared.process_tree import is_zombie

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive, unless it is a zombie
    return not is_zombie(pid)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def check_worker_start(
    settings: Settings, *, worker: str, queues: list[str], redis_wait_s: float = 300.0
) -> tuple[WorkerIdentity, str | None]:
    """Every check of a worker's start (storage, its registration, the name); returns the identity this worker
    announces itself with, and a warning to log, if any.

    Raises:
        WorkerStartError: the worker must not start; the message says what to change.
    """
    from shared.worker_presence import redis_client

    global _process_instance
    probe_shared_storage(settings.SHARED_DIR)
    identity = WorkerIdentity(
        instance=uuid.uuid4().hex, pid_space=pid_space(), pid=os.getpid(), storage=storage_id(settings.SHARED_DIR)
    )
    _process_instance = identity.instance
    client = redis_client(settings)
    give_up = time.monotonic() + redis_wait_s
    while True:
        try:
            one_clock.sync(client)  # before the first announcement: its times are on Redis' clock
            warning = check_shared_storage(client, settings, worker=worker, storage=identity.storage)
            claim_worker_name(client, settings, worker=worker, queues=queues, identity=identity)
            return identity, warning
        except redis.RedisError as exc:  # Redis not up yet (compose starts everything at once): wait a while
            if time.monotonic() > give_up:
                raise WorkerStartError(
                    f"Redis at REDIS_URL did not answer for {redis_wait_s:.0f}s ({type(exc).__name__}); start it or"
                    " fix REDIS_URL"
                ) from None
            time.sleep(2)
