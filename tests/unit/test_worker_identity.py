"""A worker's checks at start (workers/identity.py) on real Redis: names are unique across hosts, SHARED_DIR is the
shared storage and gives what the job protocol needs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import redis

from shared.settings import Settings
from shared.worker_presence import WorkerIdentity, announce, announcements
from workers.identity import (
    STORAGE_ID_FILE,
    WorkerStartError,
    check_shared_storage,
    claim_worker_name,
    pid_space,
    probe_shared_storage,
    storage_id,
)

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def settings(tmp_path):
    return Settings(
        SHARED_DIR=tmp_path / "shared", REDIS_URL=TEST_REDIS_URL, REDIS_KEY_PREFIX=f"identity-{uuid.uuid4().hex}:",
        WORKER_HEARTBEAT_S=1, _env_file=None,
    )  # fmt: skip


@pytest.fixture
def client(settings):
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail(f"no Redis at {TEST_REDIS_URL}: start redis-server or set TEST_REDIS_URL")
    yield client
    for key in client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*"):
        client.delete(key)


def identity(*, space: str | None = None, pid: int | None = None, storage: str = "s1") -> WorkerIdentity:
    return WorkerIdentity(uuid.uuid4().hex, space or pid_space(), pid or os.getpid(), storage)


class FakeTime:
    """A clock and a sleep for claim_worker_name; `during_sleep` runs at each sleep (another worker's beat)."""

    def __init__(self, during_sleep=None) -> None:
        self.now = 0.0
        self.during_sleep = during_sleep
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.during_sleep is not None:
            self.during_sleep()


def test_a_free_name_is_claimed_and_announced(client, settings):
    me = identity()
    claim_worker_name(client, settings, worker="cpu-1@a", queues=["cpu"], identity=me)
    assert announcements(client, settings)["cpu-1@a"].identity == me


def test_a_name_a_live_process_on_this_machine_holds_is_refused(client, settings):
    parent = identity(pid=os.getppid())  # alive, and not this process
    announce(client, settings, "cpu@a", ["cpu"], identity=parent)
    with pytest.raises(WorkerStartError, match="another worker is running under the name cpu@a"):
        claim_worker_name(client, settings, worker="cpu@a", queues=["cpu"], identity=identity())
    assert announcements(client, settings)["cpu@a"].identity == parent  # the live one keeps its name


def test_a_dead_predecessor_on_this_machine_gives_its_name_back_at_once(client, settings):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    announce(client, settings, "cpu@a", ["cpu"], identity=identity(pid=int(finished.stdout)))  # killed, say
    me, time = identity(), FakeTime()
    claim_worker_name(client, settings, worker="cpu@a", queues=["cpu"], identity=me, sleep=time.sleep, clock=time.clock)
    assert time.sleeps == 0 and announcements(client, settings)["cpu@a"].identity == me


def test_a_killed_predecessor_left_a_zombie_gives_its_name_back_at_once(client, settings):
    """Its parent never reaped it (a PID 1 that does not reap): signal 0 still reaches it, yet it holds no name.
    `make down && make up` under such a PID 1 used to refuse the new worker for ever."""
    from shared.process_tree import is_zombie

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # exited, not reaped: no wait() until the end
            if is_zombie(child.pid):
                break
            time.sleep(0.02)
        assert is_zombie(child.pid)
        os.kill(child.pid, 0)  # still "there" to signal 0
        announce(client, settings, "cpu@z", ["cpu"], identity=identity(pid=child.pid))
        me = identity()
        claim_worker_name(client, settings, worker="cpu@z", queues=["cpu"], identity=me)
        assert announcements(client, settings)["cpu@z"].identity == me
    finally:
        child.wait()
    assert not is_zombie(child.pid)


def test_a_name_still_announced_from_another_machine_is_refused(client, settings):
    other = identity(space="another-host", pid=1)
    announce(client, settings, "gpu0@b", ["gpu.0", "gpu"], identity=other)
    beats = FakeTime(during_sleep=lambda: announce(client, settings, "gpu0@b", ["gpu.0", "gpu"], identity=other))
    with pytest.raises(WorkerStartError, match="another machine or container"):
        claim_worker_name(
            client, settings, worker="gpu0@b", queues=["gpu"], identity=identity(pid=1),
            sleep=beats.sleep, clock=beats.clock,
        )  # fmt: skip


def test_a_silent_owner_elsewhere_is_waited_out_then_replaced(client, settings):
    """A restarted container: a new PID namespace, its predecessor's announcement not yet expired."""
    announce(client, settings, "cpu@c", ["cpu"], identity=identity(space="old-container", pid=1))
    me, time = identity(space="new-container", pid=1), FakeTime()
    claim_worker_name(client, settings, worker="cpu@c", queues=["cpu"], identity=me, sleep=time.sleep, clock=time.clock)
    assert time.sleeps >= 2 and announcements(client, settings)["cpu@c"].identity == me


def test_the_first_storage_registers_and_a_second_one_is_refused_while_its_worker_lives(client, settings, tmp_path):
    shared = storage_id(settings.SHARED_DIR)
    assert storage_id(settings.SHARED_DIR) == shared  # written once
    assert (settings.SHARED_DIR / STORAGE_ID_FILE).read_text().strip() == shared
    assert check_shared_storage(client, settings, worker="cpu@a", storage=shared) is None
    announce(client, settings, "cpu@a", ["cpu"], identity=identity(storage=shared))

    stray = storage_id(tmp_path / "not-mounted")
    with pytest.raises(WorkerStartError, match="is not the storage the other workers use") as refused:
        check_shared_storage(client, settings, worker="cpu@b", storage=stray)
    assert "cpu@a" in str(refused.value) and "docs/scale-out.md" in str(refused.value)
    assert check_shared_storage(client, settings, worker="cpu@a", storage=shared) is None  # unchanged


def test_storage_replaced_with_no_worker_left_on_the_old_one_takes_over(client, settings, tmp_path):
    assert check_shared_storage(client, settings, worker="cpu@a", storage="old") is None
    warning = check_shared_storage(client, settings, worker="cpu@a", storage="new")  # e.g. rm -rf var/shared
    assert warning is not None and "changed" in warning
    assert check_shared_storage(client, settings, worker="cpu@b", storage="new") is None


def test_the_storage_probe_passes_on_a_local_folder_and_names_what_fails(tmp_path, monkeypatch):
    probe_shared_storage(tmp_path / "shared")
    assert not [path for path in (tmp_path / "shared").rglob("*") if path.is_file()]  # leaves nothing behind

    import fcntl

    def no_locks(*_args):
        raise OSError(37, "No locks available")  # ENOLCK: NFS without a lock daemon

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(WorkerStartError, match="failed locking a file with flock: No locks available"):
        probe_shared_storage(tmp_path / "shared")


def test_two_stacks_on_one_redis_do_not_cross_under_their_own_key_prefixes(client, settings, tmp_path):
    """Two stacks, one Redis: each REDIS_KEY_PREFIX is a namespace (announcements, the storage id, Celery's keys),
    so a second stack on its own SHARED_DIR starts beside the first; on the same prefix it is refused (above)."""
    first = storage_id(settings.SHARED_DIR)
    assert check_shared_storage(client, settings, worker="cpu@a", storage=first) is None
    announce(client, settings, "cpu@a", ["cpu"], identity=identity(storage=first))
    other = Settings(
        SHARED_DIR=tmp_path / "other-stack", REDIS_URL=TEST_REDIS_URL, REDIS_KEY_PREFIX=f"other-{uuid.uuid4().hex}:",
        WORKER_HEARTBEAT_S=1, _env_file=None,
    )  # fmt: skip
    try:
        second = storage_id(other.SHARED_DIR)
        assert second != first
        assert check_shared_storage(client, other, worker="cpu@a", storage=second) is None  # not refused
        assert announcements(client, other) == {}  # it does not see the first stack's worker
        announce(client, other, "cpu@a", ["cpu"], identity=identity(storage=second))
        assert announcements(client, settings)["cpu@a"].identity.storage == first  # nor the first the second's
    finally:
        for key in client.scan_iter(match=f"{other.REDIS_KEY_PREFIX}*"):
            client.delete(key)
