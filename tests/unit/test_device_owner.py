"""Issue 30, item 4: one owner of the device per worker. A train job closes the worker's cached judge (its vLLM
engine holds GPU_MEMORY_UTILIZATION of the card) before training and gives torch's cached CUDA memory back after;
a classifier adapter with criterion votes splits the card's share between its two engines; every job records its
CUDA memory peak. The real job steps over a temporary SHARED_DIR; training, engines and CUDA are stand-ins that
write down what happened in which order."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.artifacts import METRICS_NAME
from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.common import hardware
from workers.jobs import train as train_job
from workers.predictor import predictor as predictor_module

DATASET_ID = "d" * 32
JOB_ID = "a" * 32


class FakeCuda:
    """torch.cuda of a process that has initialised CUDA: records resets, cache releases and reports a peak."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def is_initialized(self) -> bool:
        return True

    def reset_peak_memory_stats(self) -> None:
        self.events.append("reset peak")

    def max_memory_allocated(self) -> int:
        return 3 * 2**30

    def empty_cache(self) -> None:
        self.events.append("empty cache")


class FakeJudge:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def close(self) -> None:
        self.events.append("judge closed")


@pytest.fixture
def settings(tmp_path) -> Settings:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    settings = Settings(SHARED_DIR=tmp_path / "shared", MODEL_PATH=str(model_dir), API_KEY=None, _env_file=None)
    path = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    path.parent.mkdir(parents=True)
    path.write_bytes(arena_csv(4))
    return settings


@pytest.fixture
def events(monkeypatch) -> list[str]:
    recorded: list[str] = []
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=FakeCuda(recorded)))
    return recorded


def test_a_train_job_closes_the_cached_judge_before_training_and_releases_cuda_after(settings, events, monkeypatch):
    monkeypatch.setattr(predictor_module, "_CACHED_JUDGES", {("model", None, "vllm", True, False): FakeJudge(events)})

    def training(config, *, on_progress) -> dict:
        events.append(f"training with {len(predictor_module._CACHED_JUDGES)} cached judge(s)")
        metrics = {"steps": 1, "validation": {}}
        (config.output_dir / METRICS_NAME).write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(train_job, "train_judge", training)
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=JOB_ID, kind="train", state="queued", params={"dataset": DATASET_ID}))
    train_job.run_train_job(settings, job_id=JOB_ID)
    assert events == ["reset peak", "judge closed", "training with 0 cached judge(s)", "empty cache"]
    assert store.read(JOB_ID).result[hardware.CUDA_PEAK_KEY] == 3072.0


def test_cuda_is_released_even_when_training_fails(settings, events, monkeypatch):
    def training(config, *, on_progress) -> dict:
        raise MemoryError("CUDA out of memory")

    monkeypatch.setattr(train_job, "train_judge", training)
    JobStore(settings.SHARED_DIR).create(
        JobRecord(id=JOB_ID, kind="train", state="queued", params={"dataset": DATASET_ID})
    )
    with pytest.raises(MemoryError):
        train_job.run_train_job(settings, job_id=JOB_ID)
    assert events[-1] == "empty cache"


def test_without_cuda_nothing_is_recorded_and_nothing_imports_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    hardware.reset_cuda_peak_memory()
    hardware.release_cuda_memory()
    assert hardware.cuda_peak_memory() == {}
    assert "torch" not in sys.modules


@pytest.mark.parametrize(("with_votes", "shares"), [(True, [0.4, 0.4]), (False, [0.8])])
def test_a_classifier_with_votes_splits_the_cards_share_between_its_engines(settings, monkeypatch, with_votes, shares):
    settings = settings.model_copy(update={"GPU_MEMORY_UTILIZATION": 0.8})
    asked: list[float] = []

    def open_classifier(self, _settings, _tokenizer, *, model_path, adapter_dir, config) -> None:
        asked.append(config.gpu_memory_utilization)
        self.classifier = object()

    def load_engine(model_path, *, adapter_dir, config):
        asked.append(config.gpu_memory_utilization)
        return object()

    monkeypatch.setattr(predictor_module.Judge, "_open_classifier", open_classifier)
    monkeypatch.setattr(predictor_module, "load_engine", load_engine)
    monkeypatch.setattr(predictor_module, "load_tokenizer", lambda path: None)
    monkeypatch.setattr(predictor_module, "JudgePromptBuilder", lambda tokenizer, **options: None)
    monkeypatch.setattr("workers.judge.classifier.is_classifier_adapter", lambda adapter_dir: True)
    predictor_module.Judge.open(settings, adapter_dir=str(Path("adapter")), with_votes=with_votes)
    assert asked == pytest.approx(shares)
    assert sum(asked) <= settings.GPU_MEMORY_UTILIZATION  # both fit where one was allowed
