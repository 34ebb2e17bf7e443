"""A text-only train job (`"text_only": true`, issue 32) is refused before 202 for options that do not apply and
for too many rows, and accepted as a train job otherwise (the real gateway app on a temporary SHARED_DIR)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY, snapshot


def upload(client, rows: int) -> str:
    response = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(rows), "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def assert_refused(response, *words: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in str(detail), (word, detail)


REFUSED = [
    ({"text_only": True, "epochs": 1}, ["epochs", "LoRA options do not apply", "drop text_only"]),
    ({"text_only": True, "lora_rank": 8, "batch_size": 2}, ["batch_size, lora_rank"]),
    ({"text_only": True, "validation_dataset": "DATASET"}, ["validation_dataset"]),
    ({"text_only": True, "include_shipped_data": False, "shipped_data_weight": 2.0}, ["include_shipped_data: true"]),
    ({"include_shipped_data": True}, ["include_shipped_data", "text_only: true"]),
    ({"shipped_data_weight": 0.5}, ["shipped_data_weight", "text_only: true"]),
    ({"text_only": True, "include_shipped_data": True, "shipped_data_weight": 0}, ["shipped_data_weight"]),
]


@pytest.mark.parametrize("options, words", REFUSED, ids=lambda value: str(value)[:50])
def test_bad_combinations_are_refused_before_202(client, settings, options, words):
    dataset = upload(client, 6)
    options = {key: dataset if value == "DATASET" else value for key, value in options.items()}
    before = snapshot(settings.SHARED_DIR)
    assert_refused(client.post("/v1/jobs/train", json={"dataset": dataset, **options}), *words)
    assert client.get("/v1/jobs").json() == []
    assert snapshot(settings.SHARED_DIR) == before


def test_a_text_only_fit_is_accepted_with_its_options_recorded(client):
    dataset, extra = upload(client, 6), upload(client, 4)
    body = {
        "dataset": dataset,
        "text_only": True,
        "extra_datasets": [{"dataset": extra, "weight": 0.5}],
        "include_shipped_data": True,
        "shipped_data_weight": 0.25,
        "adapter_name": "my-text",
        "seed": 3,
    }
    response = client.post("/v1/jobs/train", json=body)
    assert response.status_code == 202, response.text
    params = client.get(f"/v1/jobs/{response.json()['job_id']}").json()["params"]
    assert params["text_only"] is True and params["shipped_data_weight"] == 0.25
    assert params["extra_datasets"] == [{"dataset": extra, "weight": 0.5}]


def test_more_rows_than_the_limit_are_refused_with_the_setting(settings):
    limited = settings.model_copy(update={"TEXT_FIT_MAX_ROWS": 10})
    with TestClient(create_app(limited), headers={"X-API-Key": API_KEY}) as client:
        dataset, extra = upload(client, 6), upload(client, 5)
        refused = client.post(
            "/v1/jobs/train", json={"dataset": dataset, "text_only": True, "extra_datasets": [{"dataset": extra}]}
        )
        assert_refused(refused, "11 labelled rows", "TEXT_FIT_MAX_ROWS=10")
        accepted = client.post("/v1/jobs/train", json={"dataset": dataset, "text_only": True})
        assert accepted.status_code == 202, accepted.text
