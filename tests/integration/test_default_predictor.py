"""A plain request over REST (no adapter, calibration or raw) gets the default predictor: a predict job and
/v1/score on a real worker, the calibrated text model `make setup` fitted, never the raw votes."""

import io
import json

import pandas as pd
import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import DEFAULT_PREDICTOR, make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not (DEFAULT_PREDICTOR / "text_model.json").is_file():
        pytest.fail(f"the default predictor is missing at {DEFAULT_PREDICTOR}; run `make setup`")
    stack = make_stack(tmp_path_factory, engine="vllm")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def test_a_plain_predict_job_writes_the_default_predictors_calibrated_probabilities(stack):
    dataset = stack.upload(arena_csv(6))
    response = stack.client.post("/v1/jobs/predict", json={"dataset": dataset["id"]})
    assert response.status_code == 202, response.text
    job = stack.wait_finished(response.json()["job_id"])
    assert job["state"] == "succeeded", job
    assert job["params"]["raw"] is False and job["params"]["adapter"] is None
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").content)
    [chunk] = metrics["chunks"]
    assert chunk["judge"]["kind"] == "text model" and chunk["judge"]["predictor"] == "default"
    assert chunk["calibrated"] is True and chunk["judge"]["criterion_votes"] is False
    submission = pd.read_csv(io.BytesIO(stack.client.get(f"/v1/jobs/{job['id']}/artifacts/submission.csv").content))
    assert submission["id"].tolist() == list(range(1000, 1006))
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-5


def test_a_plain_score_request_uses_the_default_predictor(stack):
    pair = {"id": "p1", "prompt": "What is 2 + 2?", "response_a": "4", "response_b": "I cannot help with that."}
    response = stack.client.post("/v1/score", json={"pairs": [pair]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["judge"]["kind"] == "text model"
    [row] = body["probabilities"]
    assert abs(row["winner_model_a"] + row["winner_model_b"] + row["winner_tie"] - 1) < 1e-6


def test_a_dataset_with_model_names_gets_its_leaderboards_and_a_leaderboard_job_ranks_the_labels(stack):
    """What a user reads after predicting an arena file: the predicted leaderboard, the human one (labels) and the
    report's figures; and a leaderboard job on the labels alone."""
    dataset = stack.upload(arena_csv(12, models=("model-x", "model-y", "model-z")))
    job = stack.wait_finished(stack.client.post("/v1/jobs/predict", json={"dataset": dataset["id"]}).json()["job_id"])
    assert job["state"] == "succeeded", job
    expected = {"reliability.png", "leaderboard.csv", "leaderboard.png", "human_leaderboard.csv", "leaderboard.json"}
    assert expected <= set(job["artifacts"])
    assert (
        job["result"]["confusion_matrix"]["labels"] == ["A", "B", "tie"] and "agreement" in job["result"]["leaderboard"]
    )
    board = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/leaderboard.csv").text.splitlines()
    assert board[0] == "model,rating,ci_low,ci_high,battles" and len(board) == 4
    png = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/leaderboard.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    response = stack.client.post("/v1/jobs/leaderboard", json={"dataset": dataset["id"], "bootstrap": 30})
    assert response.status_code == 202, response.text
    ranked = stack.wait_finished(response.json()["job_id"])
    assert ranked["state"] == "succeeded", ranked
    assert sorted(ranked["artifacts"]) == [
        "leaderboard.csv", "leaderboard.json", "leaderboard.png", "leaderboard_winrates.csv"
    ]  # fmt: skip
    # The same human ratings as the predict job's human board (the intervals differ: other bootstrap rounds).
    boards = [
        pd.read_csv(io.BytesIO(stack.client.get(f"/v1/jobs/{one}/artifacts/{name}").content))[["model", "rating"]]
        for one, name in ((ranked["id"], "leaderboard.csv"), (job["id"], "human_leaderboard.csv"))
    ]
    pd.testing.assert_frame_equal(boards[0], boards[1])
    assert ranked["progress"] == {"done": 30, "total": 30}
