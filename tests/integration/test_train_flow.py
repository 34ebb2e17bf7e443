"""Synth → train → predict through REST on a real worker.

The synth job labels 8 rows with the teacher (vLLM, short rationales) and registers its pairs.csv as a
dataset; a train job (2 steps) uses it as a weighted extra dataset; the adapter is listed; a predict job
uses it. One CPU worker; the judge engine is transformers (the classifier's path on CPU without a merged
vLLM copy), the teacher is always vLLM (structured generation).
"""

import io
import json

import pandas as pd
import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import EMBEDDED_MODEL, make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="transformers")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def test_synth_job_then_train_on_its_labels_then_predict_with_the_adapter(stack):
    dataset = stack.upload(arena_csv(8))
    synth = stack.client.post(
        "/v1/jobs/synth", json={"dataset": dataset["id"], "chunk_pairs": 4, "rationale_tokens": 24, "limit": 6}
    )
    assert synth.status_code == 202, synth.text
    synth_id = synth.json()["job_id"]
    synth_job = stack.wait_finished(synth_id, timeout=600)
    assert synth_job["state"] == "succeeded", synth_job
    assert set(synth_job["artifacts"]) == {"pairs.csv", "annotations.jsonl", "metrics.json"}
    assert synth_job["result"]["rows"] == 6 and synth_job["progress"]["done"] == synth_job["progress"]["total"]
    assert synth_job["result"]["agreement_with_human_labels"] is not None
    annotations = stack.client.get(f"/v1/jobs/{synth_id}/artifacts/annotations.jsonl").text.splitlines()
    assert len(annotations) == 6 and set(json.loads(annotations[0])["criteria"]) >= {"relevance", "accuracy"}
    synth_dataset = stack.client.get(f"/v1/datasets/{synth_job['result']['dataset']}").json()
    assert synth_dataset["rows"] == 6 and synth_dataset["labelled"] is True

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
            "extra_datasets": [{"dataset": synth_dataset["id"], "weight": 0.5}],
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    job = stack.wait_finished(job_id, timeout=600)
    assert job["state"] == "succeeded", job.get("error")
    assert job["progress"] == {"done": 2, "total": 2}
    result = job["result"]
    assert result["adapter"] == "it-judge" and result["calibration"] == "adapters/it-judge/calibration.json"
    assert result["steps"] == 2 and 0 < result["validation"]["log_loss"] < 5
    assert set(job["artifacts"]) == {"metrics.json", "learning_curve.png"}
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json").content)
    assert metrics["adapter"] == "it-judge" and metrics["task_type"] == "SEQ_CLS"
    assert "synth" in metrics["train_sources"], "the synthetic rows were trained on"
    assert metrics["calibration"]["text_model"]["validation_log_loss"] > 0

    [adapter] = stack.client.get("/v1/adapters").json()
    assert adapter["name"] == "it-judge" and adapter["complete"] and adapter["task_type"] == "SEQ_CLS"
    assert adapter["val_log_loss"] == result["validation"]["log_loss"]

    # The same name again is refused before 202: it belongs to the first job.
    again = stack.client.post("/v1/jobs/train", json={"dataset": dataset["id"], "adapter_name": "it-judge"})
    assert again.status_code == 409 and "choose another adapter_name" in again.json()["detail"], again.text

    test = stack.upload(arena_csv(3, labelled=False, start_id=4000))
    predict_id = stack.predict(test["id"], adapter="it-judge")
    predicted = stack.wait_finished(predict_id, timeout=300)
    assert predicted["state"] == "succeeded", predicted
    submission = pd.read_csv(io.BytesIO(stack.client.get(f"/v1/jobs/{predict_id}/artifacts/submission.csv").content))
    assert submission["id"].tolist() == [4000, 4001, 4002]
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-5
    chunk = json.loads(stack.client.get(f"/v1/jobs/{predict_id}/artifacts/metrics.json").content)["chunks"][0]
    assert chunk["calibrated"] is True and chunk["judge"]["adapter_kind"] == "classifier"


def test_a_train_job_naming_a_model_folder_is_accepted_and_trains_on_it(stack):
    """`model` names a folder under models/ (the embedded model's files, linked): the gateway reads its config and
    safetensors header (30 layers, q_proj ... down_proj), refuses what PEFT would refuse, and the worker trains."""
    folder = stack.settings.SHARED_DIR / "models" / "smollm2-named"
    folder.mkdir()
    for source in EMBEDDED_MODEL.iterdir():
        (folder / source.name).symlink_to(source)
    dataset = stack.upload(arena_csv(8, start_id=7000))
    body = {
        "dataset": dataset["id"],
        "model": "smollm2-named",
        "adapter_name": "named-base",
        "max_steps": 1,
        "max_length": 256,
        "batch_size": 2,
        "lora_rank": 4,
        "lora_top_layers": 2,
        "target_modules": ["q_proj", "down_proj"],
        "val_fraction": 0.3,
        "text_model": False,
    }
    too_deep = stack.client.post("/v1/jobs/train", json={**body, "lora_top_layers": 31})
    assert too_deep.status_code == 422 and "30 layers" in too_deep.json()["detail"], too_deep.text
    unknown = stack.client.post("/v1/jobs/train", json={**body, "target_modules": ["qkv_proj"]})
    assert unknown.status_code == 422 and "'qkv_proj'" in unknown.json()["detail"], unknown.text
    response = stack.client.post("/v1/jobs/train", json=body)
    assert response.status_code == 202, response.text
    job = stack.wait_finished(response.json()["job_id"], timeout=600)
    assert job["state"] == "succeeded", job.get("error")
    assert job["result"]["adapter"] == "named-base" and job["result"]["steps"] == 1
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").content)
    assert metrics["base_model"].endswith("smollm2-named"), metrics["base_model"]
