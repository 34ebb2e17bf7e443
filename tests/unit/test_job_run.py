"""JobRun: the one record / progress / cancel / deadline protocol of the predict, train and synth job steps."""

import time

import pytest

from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord
from shared.settings import Settings
from workers.jobs.run import JobCancelledError, JobRun


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, _env_file=None)


def test_a_finished_job_is_not_run_again(settings):
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id="a" * 32, kind="synth", state="queued", params={}))
    store.cancel("a" * 32)
    with pytest.raises(JobCancelledError, match="already cancelled"), JobRun(settings, "a" * 32, unit="rows"):
        pass


def test_progress_is_recorded_and_a_cancel_stops_the_step(settings):
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id="b" * 32, kind="train", state="queued", params={}))
    with JobRun(settings, "b" * 32, unit="steps") as run:
        run.start(deadline=False)
        run.report(3, 10, result={"train_loss": 1.0})
        record = store.read("b" * 32)
        assert (record.state, record.progress.done, record.progress.total) == ("running", 3, 10)
        assert record.result == {"train_loss": 1.0}
        store.cancel("b" * 32)
        with pytest.raises(JobCancelledError, match="was cancelled after 4 of 10 steps"):
            run.report(4, 10)


def test_past_its_deadline_a_chunk_fails_itself_and_the_job(settings, monkeypatch):
    store = JobStore(settings.SHARED_DIR)
    chunks = [ChunkRecord(index=0, queue="cpu", start=0, stop=4, task_id="t0")]
    record = JobRecord(id="c" * 32, kind="predict", state="running", params={"time_limit_s": 1}, chunks=chunks)
    store.create(record)
    with JobRun(settings, "c" * 32, unit="rows", chunk_index=0, deadline_hint="split the dataset") as run:
        run.start(attempts=1)  # the job's first chunk: the job starts now, its deadline is 1 s away
        run.report(1, 4)
        started = time.time()
        monkeypatch.setattr("shared.clock.local_time", lambda: started + 5)
        with pytest.raises(JobCancelledError, match="longer than its time limit of 1s"):
            run.report(2, 4)
    record = store.read("c" * 32)
    assert record.state == "failed" and record.chunks[0].state == "failed"
    assert "time limit of 1s" in record.error and "split the dataset" in record.error


def test_the_last_report_of_a_whole_job_step_beats_its_deadline(settings):
    store = JobStore(settings.SHARED_DIR)
    record = JobRecord(id="d" * 32, kind="synth", state="queued", params={"time_limit_s": 1})
    store.create(record)
    with JobRun(settings, "d" * 32, unit="distinct pairs") as run:
        run.start()
        run.deadline = 0.0  # long past
        run.report(5, 5)  # done: no failure
        with pytest.raises(JobCancelledError, match="after 4 of 5 distinct pairs"):
            run.report(4, 5)
    assert store.read("d" * 32).state == "failed"
