"""Upload → predict → download, score, cancel, a failing chunk and a placeholder job, on one CPU worker
running the default vLLM engine."""

import io
import json

import pandas as pd
import pytest

from shared.storage import dataset_csv_path, job_output_dir
from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="vllm")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def test_health_lists_the_worker(stack):
    health = stack.client.get("/readyz")
    assert health.status_code == 200, health.text
    assert health.json()["workers"] == {"cpu": 1}


def test_upload_predict_download(stack):
    dataset = stack.upload(arena_csv(3))
    job_id = stack.predict(dataset["id"])
    job = stack.wait_finished(job_id)
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"done": 3, "total": 3}
    assert job["chunks"][0]["state"] == "succeeded" and job["chunks"][0]["attempts"] == 1
    # A labelled dataset without model names: its report adds the reliability diagram, no leaderboard.
    assert set(job["artifacts"]) == {"submission.csv", "metrics.json", "votes.npz", "reliability.png"}
    assert job["timings"]["run_seconds"] > 0

    submission = pd.read_csv(io.BytesIO(stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").content))
    assert submission.columns.tolist() == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    assert submission["id"].tolist() == [1000, 1001, 1002]
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-5
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json").content)
    assert metrics["rows"] == 3 and 0 < metrics["log_loss"] < 10
    assert metrics["chunks"][0]["judge"]["engine"] == "vllm"


def test_score_a_pair(stack):
    response = stack.client.post(
        "/v1/score",
        json={
            "pairs": [{"id": "p1", "prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}],
            "tta": False,
            "raw": True,
        },
    )
    assert response.status_code == 200, response.text
    [row] = response.json()["probabilities"]
    assert row["id"] == "p1"
    assert abs(row["winner_model_a"] + row["winner_model_b"] + row["winner_tie"] - 1) < 1e-6


def test_cancel_a_running_job(stack):
    dataset = stack.upload(arena_csv(8, labelled=False))
    job_id = stack.predict(dataset["id"])
    stack.wait(job_id, until=lambda job: job["progress"]["done"] >= 1)
    cancelled = stack.client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    # The running chunk stops at its next chunk, publishes nothing, and the job stays cancelled.
    job = stack.wait(job_id, until=lambda job: job["chunks"][0]["state"] == "cancelled")
    assert job["state"] == "cancelled" and job["progress"]["done"] < 8
    stack.wait_finished(stack.predict(dataset["id"]))  # the worker is free again afterwards
    assert not (job_output_dir(stack.settings.SHARED_DIR, job_id) / "submission.csv").exists()
    assert stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").status_code == 404


def test_a_chunk_that_keeps_failing_fails_the_job(stack):
    dataset = stack.upload(arena_csv(2))
    dataset_csv_path(stack.settings.SHARED_DIR, dataset["id"]).unlink()  # lost from shared storage
    job = stack.wait_finished(stack.predict(dataset["id"]))
    assert job["state"] == "failed"
    assert "chunk 0 failed after 2 attempts" in job["error"] and "missing from shared storage" in job["error"]
    assert job["chunks"][0]["attempts"] == 2 and job["artifacts"] == []
