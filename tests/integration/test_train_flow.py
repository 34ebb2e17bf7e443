"""Train through REST on a real worker: train job (8 rows, 2 steps) → adapter listed → predict job with it.

One CPU worker on the transformers engine (the classifier's path on CPU without a merged vLLM copy).
"""

import io
import json

import pandas as pd
import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="transformers")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def test_train_job_then_predict_with_its_adapter(stack):
    dataset = stack.upload(arena_csv(8))
    response = stack.client.post(
        "/v1/jobs/train",
        json={
            "dataset": dataset["id"],
            "adapter_name": "it-judge",
            "max_steps": 2,
            "max_length": 256,
            "batch_size": 2,
            "lora_rank": 4,
            "target_modules": ["q_proj", "v_proj"],
            "val_fraction": 0.3,
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    job = stack.wait_finished(job_id, timeout=600)
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"done": 2, "total": 2}
    result = job["result"]
    assert result["adapter"] == "it-judge" and result["calibration"] == "adapters/it-judge/calibration.json"
    assert result["steps"] == 2 and 0 < result["validation"]["log_loss"] < 5
    assert set(job["artifacts"]) == {"metrics.json", "learning_curve.png"}
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json").content)
    assert metrics["adapter"] == "it-judge" and metrics["task_type"] == "SEQ_CLS"

    [adapter] = stack.client.get("/v1/adapters").json()
    assert adapter["name"] == "it-judge" and adapter["complete"] and adapter["task_type"] == "SEQ_CLS"
    assert adapter["val_log_loss"] == result["validation"]["log_loss"]

    # The same name again is refused by the worker: it belongs to the first job.
    again = stack.client.post("/v1/jobs/train", json={"dataset": dataset["id"], "adapter_name": "it-judge"})
    assert again.status_code == 202, again.text
    refused = stack.wait_finished(again.json()["job_id"], timeout=120)
    assert refused["state"] == "failed" and "choose another adapter_name" in refused["error"]

    test = stack.upload(arena_csv(3, labelled=False, start_id=4000))
    predict_id = stack.predict(test["id"], adapter="it-judge")
    predicted = stack.wait_finished(predict_id, timeout=300)
    assert predicted["state"] == "succeeded", predicted
    submission = pd.read_csv(io.BytesIO(stack.client.get(f"/v1/jobs/{predict_id}/artifacts/submission.csv").content))
    assert submission["id"].tolist() == [4000, 4001, 4002]
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-5
    shard = json.loads(stack.client.get(f"/v1/jobs/{predict_id}/artifacts/metrics.json").content)["shards"][0]
    assert shard["calibrated"] is True and shard["judge"]["adapter_kind"] == "classifier"
