"""A text-only train job through REST on a real worker: fit a text predictor on a small labelled dataset (+ a
weighted extra one), publish it as an adapter, and predict with it (issue 32)."""

import io
import json

import pandas as pd
import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="transformers")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def test_a_text_only_fit_publishes_an_adapter_that_a_predict_job_uses(stack):
    dataset = stack.upload(arena_csv(48))
    extra = stack.upload(arena_csv(16, start_id=5000))
    response = stack.client.post(
        "/v1/jobs/train",
        json={
            "dataset": dataset["id"],
            "text_only": True,
            "extra_datasets": [{"dataset": extra["id"], "weight": 0.5}],
            "include_shipped_data": False,  # the default mixes in ../shared/data: minutes more (tests/unit covers it)
            "adapter_name": "it-text",
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    job = stack.wait_finished(job_id, timeout=600)
    assert job["state"] == "succeeded", job.get("error")
    assert job["progress"]["done"] == job["progress"]["total"] > 0
    result = job["result"]
    assert result["adapter"] == "it-text" and result["kind"] == "text" and result["rows"] == 64
    assert set(result["per_source"]) == {f"dataset {dataset['id']}", f"dataset {extra['id']}"}
    assert set(job["artifacts"]) == {"metrics.json", "learning_curve.png"}
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json").content)
    assert metrics["input_weights"] == [1.0, 0.5]
    points = metrics["learning_curve"]["points"]
    assert [point["fraction"] for point in points] == [0.25, 0.5, 1.0] and points[-1]["rows"] == 48
    assert "expected_gain_from_twice_the_rows" in metrics["learning_curve"]
    png = stack.client.get(f"/v1/jobs/{job_id}/artifacts/learning_curve.png").content
    assert png.startswith(b"\x89PNG")
    [adapter] = [entry for entry in stack.client.get("/v1/adapters").json() if entry["name"] == "it-text"]
    assert adapter["kind"] == "text"

    test = stack.upload(arena_csv(3, labelled=False, start_id=4000))
    predict_id = stack.predict(test["id"], adapter="it-text")
    predicted = stack.wait_finished(predict_id, timeout=300)
    assert predicted["state"] == "succeeded", predicted
    submission = pd.read_csv(io.BytesIO(stack.client.get(f"/v1/jobs/{predict_id}/artifacts/submission.csv").content))
    assert submission["id"].tolist() == [4000, 4001, 4002]
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-5
    [chunk] = json.loads(stack.client.get(f"/v1/jobs/{predict_id}/artifacts/metrics.json").content)["chunks"]
    assert chunk["judge"]["kind"] == "text model" and chunk["calibrated"] is True

    pair = {"id": "p1", "prompt": "What is 2 + 2?", "response_a": "4", "response_b": "I cannot help with that."}
    scored = stack.client.post("/v1/score", json={"pairs": [pair], "adapter": "it-text"})
    assert scored.status_code == 200, scored.text
    [row] = scored.json()["probabilities"]
    assert abs(row["winner_model_a"] + row["winner_model_b"] + row["winner_tie"] - 1) < 1e-6
