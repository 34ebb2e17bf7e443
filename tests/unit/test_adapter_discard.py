"""A deleted train job takes its unfinished adapter folder with it (a finished adapter stays): shared/adapter_claim.py
discard_unfinished_adapter, used by DELETE /v1/jobs/{id} and by retention."""

from __future__ import annotations

import pytest

from shared.adapter_claim import claim_adapter_name, discard_unfinished_adapter
from shared.adapter_store import list_adapters
from shared.artifacts import ADAPTERS_DIR_NAME, METRICS_NAME
from shared.job_store import JobStore
from shared.schemas import JobRecord, utc_now
from shared.settings import Settings
from workers.sweeper import Sweeper

JOB, OTHER = "c" * 32, "d" * 32


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, RETENTION_DAYS=30, _env_file=None)


def train_job(settings: Settings, job_id: str, name: str) -> JobRecord:
    record = JobRecord(id=job_id, kind="train", params={"adapter_name": name}, task_ids=["t"], tenant="alice")
    JobStore(settings.SHARED_DIR).create(record)
    claim_adapter_name(settings.SHARED_DIR, name, job_id, tenant="alice")
    return record


def test_an_unfinished_adapter_goes_with_its_job_and_a_finished_one_or_another_jobs_stays(settings):
    adapters = settings.SHARED_DIR / ADAPTERS_DIR_NAME
    unfinished = train_job(settings, JOB, "half")
    (adapters / "half" / "checkpoint").mkdir()
    finished = train_job(settings, OTHER, "done")
    (adapters / "done" / METRICS_NAME).write_text("{}")
    assert {info.name for info in list_adapters(settings.SHARED_DIR)} == {"half", "done"}

    assert discard_unfinished_adapter(settings.SHARED_DIR, unfinished) is True
    assert discard_unfinished_adapter(settings.SHARED_DIR, finished) is False
    someone_elses = unfinished.model_copy(update={"id": "e" * 32, "params": {"adapter_name": "done"}})
    assert discard_unfinished_adapter(settings.SHARED_DIR, someone_elses) is False
    assert {info.name for info in list_adapters(settings.SHARED_DIR)} == {"done"}
    assert sorted(path.name for path in adapters.iterdir() if not path.name.startswith(".")) == ["done"]
    claim_adapter_name(settings.SHARED_DIR, "half", "f" * 32)  # the name is free again


def test_retention_of_a_failed_train_job_frees_its_adapter_name(settings):
    train_job(settings, JOB, "failed-fit")
    store = JobStore(settings.SHARED_DIR)
    store.fail(JOB, "out of memory")
    now = utc_now().timestamp() + 31 * 86400
    Sweeper(settings, send=lambda message: None, announcements=dict, clock=lambda: now).retain()
    assert [info.name for info in list_adapters(settings.SHARED_DIR)] == []
