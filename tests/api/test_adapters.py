"""GET /v1/adapters: trained adapters in SHARED_DIR/adapters/ with their validation figures."""

import json


def _adapter(root, name: str, *, task_type: str = "SEQ_CLS", metrics: dict | None = None, calibrated: bool = True):
    folder = root / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"task_type": task_type, "r": 16}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if calibrated:
        (folder / "calibration.json").write_text("{}")
    return folder


METRICS = {
    "base_model": "models/SmolLM2-135M-Instruct",
    "train_rows": 2650,
    "steps": 300,
    "validation": {"rows": 150, "log_loss": 1.01, "accuracy": 0.48},
    "calibration": {"fitted": True, "stacked_cv_log_loss": 0.97},
}


def test_lists_adapters_with_their_validation_figures(client, settings):
    _adapter(settings.SHARED_DIR, "judge-v1", metrics=METRICS)
    _adapter(settings.SHARED_DIR, "votes-lora", task_type="CAUSAL_LM", calibrated=False)
    training = settings.SHARED_DIR / "adapters" / "f"
    training.mkdir()
    (training / "train_job.json").write_text(json.dumps({"job_id": "0" * 32}))
    (settings.SHARED_DIR / "adapters" / "not-an-adapter").mkdir()
    (settings.SHARED_DIR / "adapters" / ".judge-v1.publish-tmp").mkdir()

    response = client.get("/v1/adapters")
    assert response.status_code == 200, response.text
    listed = {entry["name"]: entry for entry in response.json()}
    assert set(listed) == {"judge-v1", "votes-lora", "f"}
    judge = listed["judge-v1"]
    assert judge["complete"] is True and judge["task_type"] == "SEQ_CLS"
    assert judge["val_log_loss"] == 1.01 and judge["val_accuracy"] == 0.48 and judge["val_rows"] == 150
    assert judge["calibrated_val_log_loss"] == 0.97 and judge["steps"] == 300 and judge["train_rows"] == 2650
    assert judge["calibration"] == "adapters/judge-v1/calibration.json"
    assert listed["votes-lora"]["complete"] is False and listed["votes-lora"]["calibration"] is None
    assert listed["f"]["complete"] is False and listed["f"]["task_type"] is None

    one = client.get("/v1/adapters/judge-v1")
    assert one.status_code == 200 and one.json() == judge


def test_unknown_adapter_is_404_and_listing_needs_the_key(client, anonymous):
    assert client.get("/v1/adapters").json() == []
    missing = client.get("/v1/adapters/nope")
    assert missing.status_code == 404 and "GET /v1/adapters" in missing.json()["detail"]
    assert client.get("/v1/adapters/..%2Fjobs").status_code in (404, 422)
    assert anonymous.get("/v1/adapters").status_code == 401
