from __future__ import annotations

import pytest

from shared.arena_csv import read_arena_csv
from shared.settings import Settings


@pytest.fixture(scope="session")
def model_settings() -> Settings:
    # Short prompts keep the real-model tests quick on 2 cores; every code path is the default one.
    return Settings(MAX_MODEL_LEN=1024, JUDGE_CHUNK_PAIRS=4)


@pytest.fixture(scope="session")
def few_pairs(data_csv):
    dataset = read_arena_csv(data_csv)
    # Mixed sources and one multi-turn row, in a fixed order.
    multi_turn = next(index for index, pair in enumerate(dataset.pairs) if len(pair.prompt) > 1)
    rows = [0, 700, 1500, multi_turn]
    return [dataset.pairs[row] for row in rows]


@pytest.fixture(scope="session")
def vllm_judge(model_settings):
    from workers.predictor.predictor import Judge

    judge = Judge.open(model_settings, engine_kind="vllm")
    yield judge
    judge.close()


@pytest.fixture(scope="session")
def transformers_judge(model_settings):
    from workers.predictor.predictor import Judge

    judge = Judge.open(model_settings, engine_kind="transformers")
    yield judge
    judge.close()
