"""Train jobs and their adapter folder: one job claims adapters/<name>/, another is refused, the same job resumes.

The real job step over a temporary SHARED_DIR; only the training is replaced, by a fake that writes a checkpoint
and metrics.json; the worker dying mid-training is simulated by the fake raising.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.adapter_store import list_adapters, read_adapter
from shared.artifacts import METRICS_NAME, TRAIN_JOB_OWNER_NAME
from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.jobs import train as train_job
from workers.training.config import TrainingError

DATASET_ID = "d" * 32
JOB_A, JOB_B = "a" * 32, "b" * 32


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


class FakeTraining:
    """train_judge's files without a model: the first call of each job dies after a checkpoint, the next finishes."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, config, *, on_progress) -> dict:
        self.calls.append(config.output_dir)
        checkpoint = config.output_dir / "checkpoints" / "step-000001"
        if not checkpoint.exists():
            checkpoint.mkdir(parents=True)
            raise WorkerKilledError
        metrics = {"steps": 2, "resumed_from_step": 1, "validation": {}}
        (config.output_dir / METRICS_NAME).write_text(json.dumps(metrics))
        return metrics


def test_another_train_job_is_refused_the_adapter_folder_and_the_same_job_resumes(settings, monkeypatch):
    store = create_job(settings, JOB_A, "train", {"adapter_name": "shared-name"})
    create_job(settings, JOB_B, "train", {"adapter_name": "shared-name"})  # passed the gateway's check too
    training = FakeTraining()
    monkeypatch.setattr(train_job, "train_judge", training)
    with pytest.raises(WorkerKilledError):
        train_job.run_train_job(settings, job_id=JOB_A)

    with pytest.raises(TrainingError) as refused:
        train_job.run_train_job(settings, job_id=JOB_B)
    assert str(refused.value) == (
        f"adapter 'shared-name' is being written by train job {JOB_A}; choose another adapter_name"
    )
    assert len(training.calls) == 1, "the refused job wrote nothing"

    result = train_job.run_train_job(settings, job_id=JOB_A)  # redelivered: resumes from its checkpoint
    assert result == {"job_id": JOB_A, "state": "succeeded", "adapter": "shared-name"}
    assert store.read(JOB_A).result["resumed_from_step"] == 1
    owner = json.loads((settings.SHARED_DIR / "adapters" / "shared-name" / TRAIN_JOB_OWNER_NAME).read_text())
    assert owner == {"job_id": JOB_A}
    with pytest.raises(TrainingError, match=f"was written by train job {JOB_A} \\(succeeded\\); choose another"):
        train_job.run_train_job(settings, job_id=JOB_B)


def test_of_two_train_jobs_claiming_one_folder_at_once_exactly_one_gets_it(settings, monkeypatch):
    """Job B claims in the window between job A looking at the folder and job A writing its claim."""
    for job_id in (JOB_A, JOB_B):
        create_job(settings, job_id, "train", {"adapter_name": "raced"})
    adapter_dir = settings.SHARED_DIR / "adapters" / "raced"
    outcomes: dict[str, str] = {}
    real_mkdir = Path.mkdir

    def claim(job_id: str) -> None:
        try:
            train_job._claim_adapter_dir(settings, "raced", job_id)
            outcomes[job_id] = "claimed"
        except TrainingError as exc:
            outcomes[job_id] = str(exc)

    def mkdir_then_let_b_claim(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self == adapter_dir and JOB_B not in outcomes:
            outcomes[JOB_B] = "racing"
            claim(JOB_B)

    monkeypatch.setattr(Path, "mkdir", mkdir_then_let_b_claim)
    claim(JOB_A)

    claimed = [job_id for job_id, outcome in outcomes.items() if outcome == "claimed"]
    assert len(claimed) == 1, f"both jobs claimed adapters/raced: {outcomes}"
    (loser,) = {JOB_A, JOB_B} - set(claimed)
    assert outcomes[loser] == f"adapter 'raced' is being written by train job {claimed[0]}; choose another adapter_name"
    assert json.loads((adapter_dir / TRAIN_JOB_OWNER_NAME).read_text()) == {"job_id": claimed[0]}


def test_a_folder_with_files_but_no_claim_is_refused(settings):
    adapter_dir = settings.SHARED_DIR / "adapters" / "by-hand"
    adapter_dir.mkdir(parents=True)
    (adapter_dir / "adapter_config.json").write_text("{}")
    with pytest.raises(TrainingError, match="adapters/by-hand exists already; choose another adapter_name"):
        train_job._claim_adapter_dir(settings, "by-hand", JOB_A)
    assert not (adapter_dir / TRAIN_JOB_OWNER_NAME).exists()


def test_a_claimed_folder_is_listed_as_an_unfinished_adapter(settings):
    train_job._claim_adapter_dir(settings, "in-training", JOB_A)
    (info,) = list_adapters(settings.SHARED_DIR)
    assert (info.name, info.complete) == ("in-training", False)
    assert read_adapter(settings.SHARED_DIR, "in-training").complete is False


def test_the_worker_goes_on_with_the_claim_the_gateway_made_for_its_job(settings, monkeypatch):
    """POST /v1/jobs/train claims the name for the job id it accepts (shared/adapter_claim.py) before 202."""
    from shared.adapter_claim import claim_adapter_name

    store = create_job(settings, JOB_A, "train", {"adapter_name": "claimed-at-submit"})
    create_job(settings, JOB_B, "train", {"adapter_name": "claimed-at-submit"})
    claim_adapter_name(settings.SHARED_DIR, "claimed-at-submit", JOB_A)
    monkeypatch.setattr(train_job, "train_judge", FakeTraining())
    with pytest.raises(TrainingError, match=f"being written by train job {JOB_A}"):
        train_job.run_train_job(settings, job_id=JOB_B)
    with pytest.raises(WorkerKilledError):
        train_job.run_train_job(settings, job_id=JOB_A)
    assert train_job.run_train_job(settings, job_id=JOB_A)["state"] == "succeeded"
    assert store.read(JOB_A).result["adapter"] == "claimed-at-submit"
