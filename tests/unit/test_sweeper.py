"""The sweeper's decisions on real job records (a temporary SHARED_DIR), with a recorded `send` and a given set of
live workers; tests/integration/test_faults.py runs it for real (kill -9, a gateway that never sent)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.job_store import JobStore
from shared.names import PREDICT_ASSEMBLE_TASK, PREDICT_CHUNK_TASK, TRAIN_TASK
from shared.schemas import ChunkRecord, JobRecord, utc_now
from shared.settings import Settings
from shared.worker_presence import Announcement, WorkerIdentity
from workers.jobs.predict import claim_assembly
from workers.jobs.run import JobCancelledError, JobRun, StaleDeliveryError
from workers.sweeper import Sweeper, TaskMessage

JOB = "a" * 32


class Clock:
    def __init__(self) -> None:
        self.now = utc_now().timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        SHARED_DIR=tmp_path / "shared", API_KEY=None, WORKER_HEARTBEAT_S=1, DISPATCH_GRACE_S=5, LEASE_S=60,
        JOB_MAX_ATTEMPTS=2, _env_file=None,
    )  # fmt: skip


class Harness:
    def __init__(self, settings: Settings) -> None:
        self.store = JobStore(settings.SHARED_DIR)
        self.sent: list[TaskMessage] = []
        self.workers: dict[str, list[str]] = {"w1@host": ["cpu"]}
        self.clock = Clock()
        self.idle_since: dict[str, float] = {}
        self.sweeper = Sweeper(settings, send=self.sent.append, announcements=self.announcements, clock=self.clock)

    def announcements(self) -> dict[str, Announcement]:
        return {name: Announcement(queues, self.idle_since.get(name)) for name, queues in self.workers.items()}

    def predict_record(self, *, chunks: int = 1, queue: str = "cpu") -> JobRecord:
        record = JobRecord(
            id=JOB, kind="predict", params={},
            chunks=[ChunkRecord(index=i, queue=queue, start=i, stop=i + 1, task_id=f"t{i}") for i in range(chunks)],
        )  # fmt: skip
        record.task_ids = [chunk.task_id for chunk in record.chunks]
        return self.store.create(record)

    def later(self, seconds: float) -> None:
        self.clock.now += seconds


@pytest.fixture
def harness(settings) -> Harness:
    return Harness(settings)


def test_a_record_the_gateway_never_sent_is_sent_after_the_grace_period_under_its_own_task_ids(harness):
    harness.predict_record(chunks=2)
    assert harness.sweeper.sweep() == [] and harness.sent == []  # within the grace period: the gateway may be sending
    harness.later(10)
    actions = harness.sweeper.sweep()
    assert [(m.name, m.task_id, m.queue) for m in harness.sent] == [(PREDICT_CHUNK_TASK, "t0", "cpu"),
                                                                    (PREDICT_CHUNK_TASK, "t1", "cpu")]  # fmt: skip
    assert len(actions) == 2 and "never sent" in actions[0]
    record = harness.store.read(JOB)
    assert record.state == "dispatched" and all(chunk.sent_at for chunk in record.chunks)
    harness.later(10)
    assert harness.sweeper.sweep() == [] and len(harness.sent) == 2  # sent once


def test_a_sent_job_is_left_alone(harness):
    harness.predict_record()
    harness.store.mark_sent(JOB, task_ids=["t0"])
    harness.later(100)
    assert harness.sweeper.sweep() == [] and harness.sent == []


def start_chunk(settings, *, worker: str, task_id: str = "t0", instance: str | None = None) -> JobRun:
    run = JobRun(settings, JOB, unit="rows", chunk_index=0, task_id=task_id, worker=worker, instance=instance)
    run.__enter__()
    run.start()
    return run


def test_a_chunk_whose_worker_went_silent_is_requeued_under_a_new_id_and_the_old_delivery_is_stale(settings, harness):
    harness.predict_record()
    harness.store.mark_sent(JOB, task_ids=["t0"])
    old_run = start_chunk(settings, worker="w1@host")
    harness.workers = {"w2@host": ["cpu"]}  # w1 was killed
    assert harness.sweeper.sweep() == []  # missing for less than three heartbeats: maybe a Redis restart
    harness.later(4)
    [action] = harness.sweeper.sweep()
    assert "w1@host stopped answering" in action
    [message] = harness.sent
    record = harness.store.read(JOB)
    chunk = record.chunks[0]
    assert message.task_id == chunk.task_id != "t0" and chunk.state == "queued" and chunk.sent_at is not None
    assert record.task_ids == ["t0", chunk.task_id]  # cancel revokes both
    # The killed worker's message, handed out again by Redis, and the old run (were it alive after all) both stop.
    with pytest.raises(StaleDeliveryError):
        JobRun(settings, JOB, unit="rows", chunk_index=0, task_id="t0", worker="w3@host").__enter__()
    with pytest.raises(StaleDeliveryError):
        old_run.report(1, 1)
    assert harness.store.read(JOB).chunks[0].done == 0  # the stale run wrote nothing
    start_chunk(settings, worker="w2@host", task_id=chunk.task_id)
    assert harness.store.read(JOB).chunks[0].attempts == 2


def test_a_chunk_that_keeps_killing_its_worker_fails_the_job_after_job_max_attempts(settings, harness):
    harness.predict_record()
    harness.store.mark_sent(JOB, task_ids=["t0"])
    task_id = "t0"
    for _attempt in range(2):
        start_chunk(settings, worker="w1@host", task_id=task_id)
        harness.workers = {}
        harness.sweeper.sweep()
        harness.later(4)
        harness.sweeper.sweep()
        task_id = harness.store.read(JOB).chunks[0].task_id
        harness.workers = {"w1@host": ["cpu"]}
    record = harness.store.read(JOB)
    assert record.state == "failed" and "started 2 times" in record.error and "JOB_MAX_ATTEMPTS" in record.error
    assert len(harness.sent) == 1  # re-queued once, then failed


def test_a_redelivery_past_job_max_attempts_fails_the_job_at_start(settings, harness):
    """Without the sweeper (Redis' own redelivery of a worker-killing task): the worker refuses the third start."""
    harness.predict_record()
    for _ in range(2):
        run = start_chunk(settings, worker="w1@host")
        harness.store.update(JOB, lambda record: setattr(record.chunks[0], "lease_until", utc_now()))
        del run
    with pytest.raises(JobCancelledError, match="started 2 times"):
        start_chunk(settings, worker="w1@host")
    assert harness.store.read(JOB).state == "failed"


def test_a_second_delivery_of_a_running_chunk_is_refused_while_its_owner_holds_the_lease(settings, harness):
    harness.predict_record()
    start_chunk(settings, worker="w1@host")
    with pytest.raises(StaleDeliveryError, match="second delivery"):
        start_chunk(settings, worker="w2@host")
    assert harness.store.read(JOB).chunks[0].worker == "w1@host"


def test_an_expired_lease_requeues_a_chunk_even_when_its_worker_still_announces_itself(settings, harness):
    harness.predict_record()
    harness.store.mark_sent(JOB, task_ids=["t0"])
    start_chunk(settings, worker="w1@host")
    harness.later(30)
    assert harness.sweeper.sweep() == []
    harness.later(31)  # past LEASE_S=60 without a chunk: hung
    [action] = harness.sweeper.sweep()
    assert "lease expired" in action and harness.store.read(JOB).chunks[0].state == "queued"


def test_a_chunk_on_a_queue_nobody_consumes_is_moved_to_a_live_one(harness):
    harness.predict_record(queue="gpu.3")
    harness.store.mark_sent(JOB, task_ids=["t0"])
    harness.later(10)
    [action] = harness.sweeper.sweep()
    assert "gpu.3" in action and [m.queue for m in harness.sent] == ["cpu"]
    assert harness.store.read(JOB).chunks[0].queue == "cpu"


def test_a_job_whose_assembler_died_after_claiming_is_assembled_again(settings, harness):
    harness.predict_record()
    harness.store.update(JOB, lambda record: setattr(record.chunks[0], "state", "succeeded"))
    assert claim_assembly(harness.store, JOB, worker="w9@host")
    assert harness.store.read(JOB).state == "assembling"
    harness.sweeper.sweep()
    harness.later(4)  # w9 never announced itself again
    [action] = harness.sweeper.sweep()
    assert "assembl" in action and [m.name for m in harness.sent] == [PREDICT_ASSEMBLE_TASK]
    assert harness.store.read(JOB).assembler is None
    assert claim_assembly(harness.store, JOB, worker="w1@host")  # the assembly task's worker claims it


def test_a_finished_set_of_chunks_nobody_claimed_gets_an_assembly_after_the_grace_period(harness):
    harness.predict_record()
    harness.store.update(JOB, lambda record: setattr(record.chunks[0], "state", "succeeded"))
    assert harness.sweeper.sweep() == []
    harness.later(6)
    assert len(harness.sweeper.sweep()) == 1 and harness.sent[0].name == PREDICT_ASSEMBLE_TASK


def test_a_train_job_whose_worker_died_is_requeued_and_resumes_under_the_new_id(settings, harness):
    harness.store.create(JobRecord(id=JOB, kind="train", params={}, task_ids=["t0"], queue="cpu"))
    harness.store.mark_sent(JOB, task_ids=["t0"])
    with JobRun(settings, JOB, unit="steps", task_id="t0", worker="w1@host") as run:
        run.start(deadline=False)
    harness.workers = {"w2@host": ["cpu"]}
    harness.sweeper.sweep()
    harness.later(4)
    [action] = harness.sweeper.sweep()
    record = harness.store.read(JOB)
    assert "re-queued" in action and record.state == "dispatched" and len(record.task_ids) == 2
    assert [(m.name, m.task_id) for m in harness.sent] == [(TRAIN_TASK, record.task_ids[-1])]
    with JobRun(settings, JOB, unit="steps", task_id=record.task_ids[-1], worker="w2@host") as run:
        assert run.start(deadline=False).attempts == 2


def test_terminal_jobs_are_never_touched(harness):
    harness.predict_record()
    harness.store.cancel(JOB)
    harness.workers = {}
    harness.later(1000)
    assert harness.sweeper.sweep() == [] and harness.sent == []


def test_the_lease_is_renewed_by_progress(settings, harness):
    harness.predict_record()
    run = start_chunk(settings, worker="w1@host")
    first = harness.store.read(JOB).chunks[0].lease_until
    harness.store.update(JOB, lambda record: setattr(record.chunks[0], "lease_until", first - timedelta(seconds=50)))
    run.report(1, 1)
    assert harness.store.read(JOB).chunks[0].lease_until >= first


def test_a_superseded_attempt_failing_does_not_fail_its_successors_job(settings, harness):
    harness.predict_record()
    harness.store.update(JOB, lambda record: setattr(record.chunks[0], "task_id", "t1"))  # re-queued as t1
    harness.store.fail(JOB, "the old attempt crashed", chunk=(0, "t0"))
    harness.store.update_chunk(JOB, 0, if_task_id="t0", state="queued", error="old retry")
    record = harness.store.read(JOB)
    assert record.state == "queued" and record.chunks[0].error is None
    harness.store.fail(JOB, "the current attempt crashed", chunk=(0, "t1"))
    assert harness.store.read(JOB).state == "failed" and harness.store.read(JOB).chunks[0].state == "failed"

    train = "b" * 32
    harness.store.create(JobRecord(id=train, kind="train", params={}, task_ids=["t0", "t1"], queue="cpu"))
    harness.store.fail(train, "the old attempt crashed", task_id="t0")
    assert harness.store.read(train).state == "queued"
    harness.store.fail(train, "the current attempt crashed", task_id="t1")
    assert harness.store.read(train).state == "failed"


def test_a_sent_task_that_an_idle_worker_never_took_was_lost_and_is_sent_again_under_its_id(harness):
    """A Redis without persistence restarted: the queue forgot the task, the record still says sent."""
    harness.predict_record()
    harness.store.mark_sent(JOB, task_ids=["t0"])
    harness.idle_since["w1@host"] = harness.clock.now
    harness.later(3)
    assert harness.sweeper.sweep() == []  # within DISPATCH_GRACE_S=5 of the send and of going idle: wait
    harness.later(3)
    [action] = harness.sweeper.sweep()
    assert "lost" in action and [(m.task_id, m.queue) for m in harness.sent] == [("t0", "cpu")]
    harness.later(1)
    assert harness.sweeper.sweep() == []  # sent again just now: wait another grace period


def test_a_task_waiting_behind_a_busy_worker_is_not_sent_again(harness):
    harness.predict_record()
    harness.store.mark_sent(JOB, task_ids=["t0"])
    harness.later(100)  # w1 announces itself busy (no idle_since): the task waits its turn
    assert harness.sweeper.sweep() == [] and harness.sent == []


def test_a_train_job_that_keeps_killing_its_worker_fails_at_its_next_start(settings, harness):
    """Redis' own redelivery bypasses the sweeper: the start itself counts and caps the attempts."""
    harness.store.create(JobRecord(id=JOB, kind="train", params={}, task_ids=["t0"], queue="cpu"))
    for _ in range(2):
        with JobRun(settings, JOB, unit="steps", task_id="t0", worker="w1@host") as run:
            run.start(deadline=False)
        harness.store.update(JOB, lambda record: setattr(record, "lease_until", utc_now()))  # then killed
    with (
        pytest.raises(JobCancelledError, match="started 2 times"),
        JobRun(settings, JOB, unit="steps", task_id="t0", worker="w1@host") as run,
    ):
        run.start(deadline=False)
    assert harness.store.read(JOB).state == "failed"


# --- restart-safe claims (issue 31, item 4) -------------------------------------------------------------------------


def identity(instance: str) -> WorkerIdentity:
    return WorkerIdentity(instance=instance, pid_space="host-a", pid=7, storage="s1")


class RestartingHarness(Harness):
    """Announcements that carry each worker's process instance, as real workers send them."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.instances: dict[str, str] = {"w1@host": "first"}

    def announcements(self) -> dict[str, Announcement]:
        return {
            name: Announcement(queues, self.idle_since.get(name), identity=identity(self.instances[name]))
            for name, queues in self.workers.items()
        }


@pytest.fixture
def restarting(settings) -> RestartingHarness:
    return RestartingHarness(settings)


def test_a_chunk_claimed_by_an_earlier_instance_of_the_same_name_is_requeued_at_once(settings, restarting):
    restarting.predict_record()
    restarting.store.mark_sent(JOB, task_ids=["t0"])
    start_chunk(settings, worker="w1@host", instance="first")
    assert restarting.store.read(JOB).chunks[0].worker_instance == "first"
    assert restarting.sweeper.sweep() == []  # the instance that claimed it still announces the name
    restarting.instances["w1@host"] = "second"  # killed -9 and back under the same name, within one heartbeat
    [action] = restarting.sweeper.sweep()  # no waiting for worker_gone_s or LEASE_S
    assert "w1@host restarted" in action
    chunk = restarting.store.read(JOB).chunks[0]
    assert chunk.state == "queued" and chunk.task_id != "t0" and [m.task_id for m in restarting.sent] == [chunk.task_id]


def test_an_assembly_claimed_by_an_earlier_instance_of_the_same_name_is_sent_again_at_once(settings, restarting):
    restarting.predict_record()
    restarting.store.update(JOB, lambda record: setattr(record.chunks[0], "state", "succeeded"))
    assert claim_assembly(restarting.store, JOB, worker="w1@host", instance="first")
    assert restarting.sweeper.sweep() == []
    restarting.instances["w1@host"] = "second"
    [action] = restarting.sweeper.sweep()
    assert "assembl" in action and [m.name for m in restarting.sent] == [PREDICT_ASSEMBLE_TASK]
    record = restarting.store.read(JOB)
    assert record.assembler is None and record.assembler_instance is None and record.state == "assembling"
    assert claim_assembly(restarting.store, JOB, worker="w1@host", instance="second")  # the new process assembles


def test_the_same_name_in_a_new_process_takes_its_own_dead_assembly_over_and_nobody_else_does(restarting):
    restarting.predict_record()
    restarting.store.update(JOB, lambda record: setattr(record.chunks[0], "state", "succeeded"))
    assert claim_assembly(restarting.store, JOB, worker="w1@host", instance="first")
    assert not claim_assembly(restarting.store, JOB, worker="w1@host", instance="first")  # a repeated message
    assert not claim_assembly(restarting.store, JOB, worker="w2@host", instance="other")
    assert claim_assembly(restarting.store, JOB, worker="w1@host", instance="second")
    assert restarting.store.read(JOB).assembler_instance == "second"


def test_a_train_job_claimed_by_an_earlier_instance_is_requeued_at_once(settings, restarting):
    restarting.store.create(JobRecord(id=JOB, kind="train", params={}, task_ids=["t0"], queue="cpu"))
    restarting.store.mark_sent(JOB, task_ids=["t0"])
    with JobRun(settings, JOB, unit="steps", task_id="t0", worker="w1@host", instance="first") as run:
        run.start(deadline=False)
    restarting.instances["w1@host"] = "second"
    [action] = restarting.sweeper.sweep()
    assert "w1@host restarted" in action and restarting.store.read(JOB).state == "dispatched"


def test_a_claim_without_an_instance_falls_back_to_the_name(settings, restarting):
    """Records written before instances were recorded: the name alone decides, as before."""
    restarting.predict_record()
    restarting.store.mark_sent(JOB, task_ids=["t0"])
    start_chunk(settings, worker="w1@host", instance=None)
    restarting.instances["w1@host"] = "second"
    assert restarting.sweeper.sweep() == []
