"""What a REST text-only fit reads (workers/jobs/text_fit.py): the user's rows, then by default the shipped data at
the measured weight; left out with a note where that default cannot hold, an error where it was asked for."""

from __future__ import annotations

import pytest

from shared.schemas import TrainJobRequest
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.jobs.text_fit import SHIPPED_DATA_NAME, csv_rows, text_fit_inputs
from workers.training.config import TrainingError

DATASET_ID, EXTRA_ID = "a" * 32, "b" * 32


@pytest.fixture
def settings(tmp_path) -> Settings:
    for dataset_id, rows in ((DATASET_ID, 30), (EXTRA_ID, 10)):
        path = dataset_csv_path(tmp_path / "shared", dataset_id)
        path.parent.mkdir(parents=True)
        path.write_bytes(arena_csv(rows))
    (tmp_path / "shipped.csv").write_bytes(arena_csv(50, start_id=9000))
    return Settings(
        SHARED_DIR=tmp_path / "shared", DEFAULT_TRAIN_CSV=tmp_path / "shipped.csv", TEXT_FIT_MAX_ROWS=1000,
        API_KEY=None, _env_file=None,
    )  # fmt: skip


def request(**fields) -> TrainJobRequest:
    return TrainJobRequest(dataset=DATASET_ID, text_only=True, **fields)


def test_by_default_the_shipped_rows_come_last_at_the_measured_weight(settings):
    inputs = text_fit_inputs(settings, request(extra_datasets=[{"dataset": EXTRA_ID, "weight": 0.5}]))
    assert inputs.names == [f"dataset {DATASET_ID}", f"dataset {EXTRA_ID}", SHIPPED_DATA_NAME]
    assert inputs.weights == [1.0, 0.5, 0.1] and inputs.user_inputs == 2 and inputs.notes == []
    assert csv_rows(inputs.paths[-1]) == 50


def test_your_rows_alone_when_asked(settings):
    inputs = text_fit_inputs(settings, request(include_shipped_data=False))
    assert inputs.names == [f"dataset {DATASET_ID}"] and inputs.user_inputs == 1 and inputs.notes == []


def test_the_default_leaves_out_shipped_data_the_server_lacks_or_that_passes_the_row_cap(settings):
    missing = settings.model_copy(update={"DEFAULT_TRAIN_CSV": settings.SHARED_DIR / "none.csv"})
    inputs = text_fit_inputs(missing, request())
    assert len(inputs.paths) == 1 and "DEFAULT_TRAIN_CSV is missing" in inputs.notes[0]
    capped = settings.model_copy(update={"TEXT_FIT_MAX_ROWS": 60})
    inputs = text_fit_inputs(capped, request())
    assert len(inputs.paths) == 1 and "make 80, over TEXT_FIT_MAX_ROWS (60)" in inputs.notes[0]


def test_shipped_data_asked_for_and_missing_fails_with_the_fix(settings):
    missing = settings.model_copy(update={"DEFAULT_TRAIN_CSV": settings.SHARED_DIR / "none.csv"})
    with pytest.raises(TrainingError, match="DEFAULT_TRAIN_CSV is missing\\); fit without it"):
        text_fit_inputs(missing, request(include_shipped_data=True))
