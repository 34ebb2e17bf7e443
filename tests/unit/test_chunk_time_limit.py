"""A predict job's time limit bounds the job: its chunks share one deadline, from the first chunk's start.

However many chunks a job has and however many workers pull them, `time_limit_s` (at most JOB_TIME_LIMIT_S) is
the longest the job runs: a chunk starting after its job's deadline fails the job with the reason instead of
judging, and one starting before it judges.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord, utc_now
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.jobs import predict as jobs
from workers.jobs.run import JobCancelledError

DATASET_ID = "d" * 32
JOB_ID = "e" * 32


class ReachedJudging(Exception):
    pass


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, JOB_TIME_LIMIT_S=3600, _env_file=None)
    path = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    path.parent.mkdir(parents=True)
    path.write_bytes(arena_csv(2))
    return settings


def job_started(store: JobStore, *, ago: timedelta) -> None:
    chunks = [
        ChunkRecord(index=0, queue="cpu", start=0, stop=1, task_id="t0", state="succeeded", attempts=1, done=1),
        ChunkRecord(index=1, queue="cpu", start=1, stop=2, task_id="t1"),
    ]
    record = JobRecord(id=JOB_ID, kind="predict", state="running", params={"dataset": DATASET_ID}, chunks=chunks)
    record.started_at = utc_now() - ago
    store.create(record)


@pytest.fixture
def reaching_the_judge(monkeypatch):
    class FakePredictor:
        def predict(self, *_args, **_kwargs):
            raise ReachedJudging

    monkeypatch.setattr(jobs.PredictRequest, "from_params", classmethod(lambda cls, *_: cls()))
    monkeypatch.setattr(jobs.Predictor, "cached", classmethod(lambda cls, *_: FakePredictor()))


def test_a_chunk_starting_past_its_jobs_deadline_fails_the_job(settings, reaching_the_judge):
    store = JobStore(settings.SHARED_DIR)
    job_started(store, ago=timedelta(hours=2))  # JOB_TIME_LIMIT_S is 1 h
    with pytest.raises(JobCancelledError, match="longer than its time limit of 3600s"):
        jobs.run_predict_chunk(settings, job_id=JOB_ID, chunk_index=1, worker="w2", task_id="t1")
    record = store.read(JOB_ID)
    assert record.state == "failed" and "add workers" in record.error and record.chunks[1].state == "failed"


def test_a_chunk_starting_within_its_jobs_time_limit_judges(settings, reaching_the_judge):
    store = JobStore(settings.SHARED_DIR)
    job_started(store, ago=timedelta(minutes=50))
    with pytest.raises(ReachedJudging):
        jobs.run_predict_chunk(settings, job_id=JOB_ID, chunk_index=1, worker="w2", task_id="t1")
    assert store.read(JOB_ID).state == "running", store.read(JOB_ID).error


def test_the_celery_config_sets_nothing_that_solo_workers_ignore(settings):
    from shared.celery_config import make_celery

    conf = make_celery(settings).conf
    assert conf.worker_pool == "solo" and conf.task_acks_late is True
    # Only a prefork pool has children whose death this option handles; with solo it would only mislead.
    assert not conf.task_reject_on_worker_lost
