"""The domain check's statistic and decision (workers/predictor/domain.py) and its place in a predict job's metrics.

The assembly tests run the real assembly (workers/jobs/predict.py) over a temporary SHARED_DIR whose chunks carry
the per-row nearest-prompt cosines a text predictor writes.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord
from shared.settings import Settings
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from workers.jobs import predict as jobs
from workers.predictor.domain import (
    NO_REFERENCE_NOTE,
    UNLIKE_DATA_LOG_LOSS,
    UNLIKE_DATA_SHRUNK_LOG_LOSS,
    UNLIKE_DATA_TRANSFER_LOG_LOSS,
    DomainReference,
    alarm_threshold,
    domain_check,
    in_domain_statistics,
    nearest_cosines,
    sample_distinct,
)

# The figures a predictor fitted on the shipped data records (docs/benchmarks.md, "Generalisation").
SHIPPED = {"in_domain_statistics": [0.467, 0.485, 0.47], "expected_log_loss_in_domain": 0.885, "reference_prompts": 9}


def test_the_statistic_is_the_median_nearest_cosine_and_a_low_one_raises_the_alarm():
    like = domain_check(np.array([0.2, 0.46, 0.5, 0.9, np.nan]), SHIPPED, setting=0.455)
    assert like["statistic"] == pytest.approx(0.48) and like["threshold"] == 0.453  # lowest fold 0.467 - 0.014
    assert like["like_training"] is True and like["expected_log_loss"] == 0.885
    unlike = domain_check(np.array([0.3, 0.41, 0.44]), SHIPPED, setting=0.455)
    assert unlike["statistic"] == pytest.approx(0.41) and unlike["like_training"] is False
    assert unlike["expected_log_loss"] == UNLIKE_DATA_LOG_LOSS == 1.06
    assert "unlike the predictor's training data" in unlike["note"] and "1.06" in unlike["note"]
    assert domain_check(np.array([np.nan]), SHIPPED, setting=0.455) == {"note": "no rows to check"}


def test_the_alarm_is_lowered_for_a_predictor_whose_own_folds_read_lower():
    assert alarm_threshold(SHIPPED, setting=0.455) == 0.453
    assert alarm_threshold({"in_domain_statistics": [0.6, 0.7]}, setting=0.455) == 0.455  # the setting caps it
    assert alarm_threshold({"in_domain_statistics": [0.3639, 0.3852]}, setting=0.455) == pytest.approx(0.3499)
    assert alarm_threshold({}, setting=0.455) == 0.455
    # A set that reads just above the small predictor's threshold is like its data, though under the setting.
    small = {"in_domain_statistics": [0.3639, 0.3852], "expected_log_loss_in_domain": 0.9}
    assert domain_check(np.array([0.37]), small, setting=0.455)["like_training"] is True


def unit_rows(rng: np.random.Generator, rows: int, dim: int = 16) -> np.ndarray:
    vectors = rng.normal(size=(rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_nearest_cosines_the_sample_and_the_reference_file(tmp_path):
    rng = np.random.default_rng(0)
    reference = unit_rows(rng, 50)
    probe = np.vstack([reference[3], -reference[7], unit_rows(rng, 1)[0]])
    nearest = nearest_cosines(probe, reference, block_rows=2)  # blocks of 2: the last block is partial
    assert nearest[0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(nearest[2], (probe[2] @ reference.T).max(), atol=1e-6)
    assert nearest[1] < 1.0

    keys = [f"prompt {row % 20}" for row in range(50)]  # 20 distinct prompts
    assert len(sample_distinct(reference, keys, limit=100, seed=0)) == 20
    drawn = sample_distinct(reference, keys, limit=5, seed=0)
    assert len(drawn) == 5 and np.array_equal(drawn, sample_distinct(reference, keys, limit=5, seed=0))

    statistics = in_domain_statistics(reference, keys, np.arange(50) % 20, limit=100, seed=0)
    assert len(statistics) == 5 and all(-1 <= value <= 1 for value in statistics)

    saved = DomainReference(prompts=reference.astype(np.float16), figures=SHIPPED).save(tmp_path / "ref.npz")
    loaded = DomainReference.load(saved)
    assert loaded.prompts.dtype == np.float16 and loaded.figures == SHIPPED
    assert loaded.nearest_cosines(reference[:1])[0] == pytest.approx(1.0, abs=2e-3)  # float16 reference
    assert DomainReference.load(tmp_path / "missing.npz") is None


DATASET_ID = "d" * 32


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, _env_file=None)
    path = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    path.parent.mkdir(parents=True)
    path.write_bytes(arena_csv(4))
    return settings


def assembled_job(
    settings: Settings, job_id: str, *, judge: dict, nearest: list[float] | None, transfer: list[float] | None = None
) -> dict:
    """The metrics of a predict job whose two chunks were judged by `judge` with these nearest-prompt cosines (and,
    with `transfer`, a transfer model that answered these probabilities for every row)."""
    store = JobStore(settings.SHARED_DIR)
    chunks = [
        ChunkRecord(index=index, queue="cpu", start=2 * index, stop=2 * index + 2, task_id=f"t{index}",
                    state="succeeded", done=2, summary={"chunk": index, "judge": judge})
        for index in (0, 1)
    ]  # fmt: skip
    store.create(JobRecord(id=job_id, kind="predict", state="running", params={"dataset": DATASET_ID}, chunks=chunks))
    for chunk in chunks:
        path = jobs.chunk_path(settings.SHARED_DIR, job_id, chunk.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if nearest is None else {"prompt_nearest_cosine": np.array(nearest[chunk.start : chunk.stop])}
        if transfer is not None:
            extra["transfer_logprobs"] = np.log(np.tile(transfer, (2, 1)))
        with open(path, "wb") as handle:
            np.savez(
                handle,
                ids=np.array([str(1000 + row) for row in range(chunk.start, chunk.stop)]),
                probabilities=np.tile([0.6, 0.3, 0.1], (2, 1)),
                vote_logprobs=np.zeros((2, 1, 0, 4)),
                truncated=np.zeros(2, dtype=bool),
                text_logprobs=np.log(np.full((2, 3), 1 / 3)),
                **extra,
            )
    jobs.assemble_predict_job(settings, job_id=job_id)
    record = store.read(job_id)
    assert record.state == "succeeded"
    return record.result


def submitted(settings: Settings, job_id: str) -> np.ndarray:
    import pandas as pd

    frame = pd.read_csv(jobs.job_output_dir(settings.SHARED_DIR, job_id) / "submission.csv")
    return frame[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()


TEXT_JUDGE = {"predictor": "default", "kind": "text model", "domain_reference": SHIPPED}


def test_a_text_predictor_job_reports_its_domain_check(settings):
    unlike = assembled_job(settings, "a" * 32, judge=TEXT_JUDGE, nearest=[0.40, 0.42, 0.38, 0.50])
    assert unlike["domain_check"]["statistic"] == pytest.approx(0.41)
    assert unlike["domain_check"]["like_training"] is False and unlike["domain_check"]["expected_log_loss"] == 1.06
    like = assembled_job(settings, "b" * 32, judge=TEXT_JUDGE, nearest=[0.50, 0.48, 0.70, 0.30])
    assert like["domain_check"]["like_training"] is True and like["domain_check"]["expected_log_loss"] == 0.885


def test_an_older_text_predictor_says_it_has_no_reference_and_other_judges_have_no_check(settings):
    older = {"predictor": "default", "kind": "text model"}
    assert assembled_job(settings, "c" * 32, judge=older, nearest=None)["domain_check"] == {"note": NO_REFERENCE_NOTE}
    llm = {"model": "models/SmolLM2-135M-Instruct", "adapter": None, "engine": "vllm"}
    assert "domain_check" not in assembled_job(settings, "e" * 32, judge=llm, nearest=None)


PRIOR = [0.4, 0.4, 0.2]


def test_an_unlike_job_of_enough_rows_is_shrunk_toward_the_training_prior(settings):
    """DOMAIN_SHRINK_WEIGHT: on sources the predictor never saw, its output mixed with the prior scored better."""
    judge = {**TEXT_JUDGE, "domain_reference": {**SHIPPED, "class_prior": PRIOR}}
    shrinking = settings.model_copy(update={"DOMAIN_SHRINK_WEIGHT": 0.5, "DOMAIN_SHRINK_MIN_ROWS": 4})
    # A predictor fitted before recipe 3 has no transfer model: its chunks carry none.
    unlike = assembled_job(shrinking, "a" * 32, judge=judge, nearest=[0.40, 0.42, 0.38, 0.50])
    check = unlike["domain_check"]
    assert check["shrink"] == {"weight": 0.5, "prior": PRIOR}
    assert check["expected_log_loss"] == UNLIKE_DATA_SHRUNK_LOG_LOSS and "weight 0.5" in check["note"]
    np.testing.assert_allclose(submitted(shrinking, "a" * 32), np.tile([0.5, 0.35, 0.15], (4, 1)), atol=1e-6)

    # Like data, too few rows for the check to be sure, the setting at 0 or an older predictor: left as judged.
    like = assembled_job(shrinking, "b" * 32, judge=judge, nearest=[0.50, 0.48, 0.70, 0.30])
    few = assembled_job(settings.model_copy(update={"DOMAIN_SHRINK_MIN_ROWS": 5}), "c" * 32, judge=judge,
                        nearest=[0.40, 0.42, 0.38, 0.50])  # fmt: skip
    off = assembled_job(settings.model_copy(update={"DOMAIN_SHRINK_WEIGHT": 0.0, "DOMAIN_SHRINK_MIN_ROWS": 4}),
                        "e" * 32, judge=judge, nearest=[0.40, 0.42, 0.38, 0.50])  # fmt: skip
    older = assembled_job(shrinking, "f" * 32, judge=TEXT_JUDGE, nearest=[0.40, 0.42, 0.38, 0.50])
    for job_id, result in (("b", like), ("c", few), ("e", off), ("f", older)):
        assert "shrink" not in result["domain_check"], job_id
        np.testing.assert_allclose(submitted(settings, job_id * 32), np.tile([0.6, 0.3, 0.1], (4, 1)), atol=1e-6)
    assert few["domain_check"]["expected_log_loss"] == UNLIKE_DATA_LOG_LOSS


TRANSFER = [0.45, 0.35, 0.2]


def test_an_unlike_job_of_enough_rows_is_answered_by_the_transfer_model(settings):
    """DOMAIN_TRANSFER_MODEL: on sources the predictor never saw, its transfer model scored best (1.006 against
    1.056 as judged and 1.025 shrunk)."""
    judge = {**TEXT_JUDGE, "domain_reference": {**SHIPPED, "class_prior": PRIOR}}
    acting = settings.model_copy(update={"DOMAIN_SHRINK_WEIGHT": 0.5, "DOMAIN_SHRINK_MIN_ROWS": 4})
    unlike = assembled_job(acting, "a" * 32, judge=judge, nearest=[0.40, 0.42, 0.38, 0.50], transfer=TRANSFER)
    check = unlike["domain_check"]
    assert check["answered_by"] == "transfer model" and "shrink" not in check
    assert check["expected_log_loss"] == UNLIKE_DATA_TRANSFER_LOG_LOSS and "transfer model" in check["note"]
    np.testing.assert_allclose(submitted(acting, "a" * 32), np.tile(TRANSFER, (4, 1)), atol=1e-6)

    # Switched off: the shrink again. Like data or too few rows: left as judged.
    off = acting.model_copy(update={"DOMAIN_TRANSFER_MODEL": False})
    shrunk = assembled_job(off, "b" * 32, judge=judge, nearest=[0.40, 0.42, 0.38, 0.50], transfer=TRANSFER)
    assert "answered_by" not in shrunk["domain_check"] and shrunk["domain_check"]["shrink"]["weight"] == 0.5
    np.testing.assert_allclose(submitted(off, "b" * 32), np.tile([0.5, 0.35, 0.15], (4, 1)), atol=1e-6)
    like = assembled_job(acting, "c" * 32, judge=judge, nearest=[0.50, 0.48, 0.70, 0.30], transfer=TRANSFER)
    few = assembled_job(acting.model_copy(update={"DOMAIN_SHRINK_MIN_ROWS": 5}), "e" * 32, judge=judge,
                        nearest=[0.40, 0.42, 0.38, 0.50], transfer=TRANSFER)  # fmt: skip
    for job_id, result in (("c", like), ("e", few)):
        assert "answered_by" not in result["domain_check"] and "shrink" not in result["domain_check"], job_id
        np.testing.assert_allclose(submitted(acting, job_id * 32), np.tile([0.6, 0.3, 0.1], (4, 1)), atol=1e-6)
