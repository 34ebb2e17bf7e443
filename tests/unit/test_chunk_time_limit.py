"""A predict shard's time limit counts from this attempt's start, not from the job's first start.

A worker killed mid-shard leaves its message unacknowledged; Redis redelivers it after the visibility timeout
(hours). Measured from the job's first started_at, the redelivered shard would be past its deadline on arrival
and fail the job at once; measured per attempt, it gets the whole limit again.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.job_store import JobStore
from shared.schemas import JobRecord, ShardRecord, utc_now
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.jobs import predict as jobs

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


def test_a_redelivered_shard_gets_the_whole_time_limit_again(settings, monkeypatch):
    store = JobStore(settings.SHARED_DIR)
    # The first attempt started 7 h ago on a worker that was killed; the message came back just now.
    shard = ShardRecord(index=0, queue="cpu", start=0, stop=2, task_id="t0", state="running", attempts=1)
    record = JobRecord(id=JOB_ID, kind="predict", state="running", params={"dataset": DATASET_ID}, shards=[shard])
    record.started_at = utc_now() - timedelta(hours=7)
    store.create(record)

    class FakePredictor:
        def predict(self, *_args, **_kwargs):
            raise ReachedJudging

    monkeypatch.setattr(jobs.PredictRequest, "from_params", classmethod(lambda cls, *_: cls()))
    monkeypatch.setattr(jobs.Predictor, "cached", classmethod(lambda cls, *_: FakePredictor()))

    with pytest.raises(ReachedJudging):
        jobs.run_predict_shard(settings, job_id=JOB_ID, shard_index=0, worker="w2", task_id="t0")
    assert store.read(JOB_ID).state == "running", store.read(JOB_ID).error


def test_the_celery_config_sets_nothing_that_solo_workers_ignore(settings):
    from shared.celery_config import make_celery

    conf = make_celery(settings).conf
    assert conf.worker_pool == "solo" and conf.task_acks_late is True
    # Only a prefork pool has children whose death this option handles; with solo it would only mislead.
    assert not conf.task_reject_on_worker_lost
