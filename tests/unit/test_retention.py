"""Retention and the index of active jobs: the sweeper on a fake clock deletes what ended RETENTION_DAYS ago (jobs
with their files and Idempotency-Key, unused datasets) and keeps the rest; a deleted job stops its worker."""

from __future__ import annotations

import json

import pytest

from shared.dataset_store import DatasetStore
from shared.job_store import JobNotFoundError, JobStore
from shared.schemas import ChunkRecord, JobRecord, utc_now
from shared.settings import Settings
from shared.storage import job_output_dir
from tests.api.arena_rows import arena_csv
from workers.jobs.run import JobRun
from workers.sweeper import Sweeper

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = utc_now().timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, RETENTION_DAYS=30, _env_file=None)


def predict_job(store: JobStore, job_id: str, *, dataset: str, tenant: str = "alice") -> JobRecord:
    record = JobRecord(
        id=job_id, kind="predict", params={"dataset": dataset}, tenant=tenant,
        chunks=[ChunkRecord(index=0, queue="cpu", start=0, stop=3, task_id="t0")], task_ids=["t0"],
    )  # fmt: skip
    return store.create(record)


def dataset(settings: Settings, tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.csv"
    path.write_bytes(arena_csv(3))
    return DatasetStore(settings.SHARED_DIR, max_bytes=10**6).register(path, name=name, tenant="alice").id


def test_retention_deletes_what_ended_long_ago_and_keeps_what_is_recent_or_in_use(settings, tmp_path):
    store = JobStore(settings.SHARED_DIR)
    clock = Clock()
    sweeper = Sweeper(settings, send=lambda message: None, announcements=dict, clock=clock)
    old_data, used_data = dataset(settings, tmp_path, "old"), dataset(settings, tmp_path, "used")
    finished, running = "a" * 32, "b" * 32
    predict_job(store, finished, dataset=old_data)
    store.succeed(finished, artifacts=["submission.csv"], result={})
    job_output_dir(settings.SHARED_DIR, finished).mkdir(parents=True)
    key_file = store.jobs_dir / ".idempotency" / "k.json"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(json.dumps({"job_id": finished}))
    (store.jobs_dir / ".idempotency" / "by-job").mkdir()
    (store.jobs_dir / ".idempotency" / "by-job" / finished).write_text("k.json")
    predict_job(store, running, dataset=used_data)

    clock.now += 29 * DAY
    assert sweeper.retain() == []  # nothing ended 30 days ago yet
    clock.now += 2 * DAY
    actions = sweeper.retain()
    assert any(finished in action for action in actions) and any(old_data in action for action in actions)
    with pytest.raises(JobNotFoundError):
        store.read(finished)
    assert not job_output_dir(settings.SHARED_DIR, finished).exists() and not key_file.exists()
    assert store.read(running).state == "queued"  # unfinished: never swept, and its dataset stays
    datasets = {info.id for info in DatasetStore(settings.SHARED_DIR, max_bytes=10**6).list()}
    assert datasets == {used_data}
    assert store.active_ids() == [running] and store.active_ids(tenant="alice") == [running]
    assert sweeper.retain() == []  # idempotent


def test_the_active_index_is_built_once_from_records_written_before_it(settings):
    store = JobStore(settings.SHARED_DIR)
    store.jobs_dir.mkdir(parents=True)
    for job_id, state in (("d" * 32, "running"), ("e" * 32, "succeeded")):
        record = JobRecord(id=job_id, kind="train", state=state)
        (store.jobs_dir / f"{job_id}.json").write_text(record.model_dump_json())
    assert JobStore(settings.SHARED_DIR).active_ids() == ["d" * 32]
    assert [record.id for record in store.active()] == ["d" * 32]


def test_a_worker_stops_at_its_next_batch_when_its_job_was_deleted(settings, tmp_path):
    store = JobStore(settings.SHARED_DIR)
    job_id = "f" * 32
    predict_job(store, job_id, dataset=dataset(settings, tmp_path, "x"))
    with JobRun(settings, job_id, unit="rows", chunk_index=0, task_id="t0", worker="w1") as run:
        run.start()
        run.report(1, 3)
        store.cancel(job_id)
        store.delete(job_id)
        with pytest.raises(JobNotFoundError):  # workers/tasks.py stops on it, never retries
            run.report(2, 3)
