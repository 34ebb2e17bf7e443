"""A synth job delivered again after it registered its dataset: the real job step over a temporary SHARED_DIR.

Only the labelling is replaced, by a fake that writes the files run_synth would; the worker dying between two
steps is simulated by the next call raising.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.artifacts import METRICS_NAME, SYNTH_ANNOTATIONS_NAME, SYNTH_PAIRS_NAME
from shared.dataset_store import DatasetStore
from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.jobs import synth as synth_job
from workers.jobs.run import JobRun

DATASET_ID = "d" * 32
JOB_ID = "a" * 32


class WorkerKilledError(Exception):
    """Stands for the worker dying at that point (the message is then delivered again)."""


@pytest.fixture
def settings(tmp_path) -> Settings:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # the judge/teacher model folder exists; nothing loads it here
    settings = Settings(SHARED_DIR=tmp_path / "shared", MODEL_PATH=str(model_dir), API_KEY=None, _env_file=None)
    path = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    path.parent.mkdir(parents=True)
    path.write_bytes(arena_csv(4))
    return settings


def create_job(settings: Settings, job_id: str, kind: str, params: dict) -> JobStore:
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=job_id, kind=kind, state="queued", params={"dataset": DATASET_ID, **params}))
    return store


def fake_run_synth(config, *, teacher_factory, on_progress) -> dict:
    """What run_synth leaves in synth/<job_id>/ once every chunk is labelled."""
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SYNTH_PAIRS_NAME).write_bytes(arena_csv(4))
    (output_dir / SYNTH_ANNOTATIONS_NAME).write_text("{}\n")
    metrics = {
        "rows": 4,
        "distinct_pairs": 4,
        "chunks_reused": 1,
        "throughput": {"pairs_per_second": 1.0, "generated_tokens_per_second": 10.0},
        "rationales": {"parse_failures": 0},
    }
    (output_dir / METRICS_NAME).write_text(json.dumps(metrics))
    return metrics


def test_a_synth_job_redelivered_after_registering_keeps_its_one_dataset(settings, monkeypatch):
    store = create_job(settings, JOB_ID, "synth", {})
    monkeypatch.setattr(synth_job, "run_synth", fake_run_synth)
    datasets = DatasetStore(settings.SHARED_DIR, max_bytes=settings.MAX_UPLOAD_BYTES)

    def killed(self, **_):
        raise WorkerKilledError

    with monkeypatch.context() as patch:  # registered, then died before the job was marked succeeded
        patch.setattr(JobRun, "succeed", killed)
        with pytest.raises(WorkerKilledError):
            synth_job.run_synth_job(settings, job_id=JOB_ID)
    first = [info for info in datasets.list() if info.id != DATASET_ID]
    assert len(first) == 1

    returned = synth_job.run_synth_job(settings, job_id=JOB_ID)

    registered = [info for info in datasets.list() if info.id != DATASET_ID]
    assert registered == first, "the redelivered job registered a second dataset"
    record = store.read(JOB_ID)
    assert record.state == "succeeded"
    assert returned["dataset"] == record.result["dataset"] == first[0].id
    assert not [path.name for path in datasets.root.iterdir() if path.name.startswith(".")], "no staging left"
