"""Bounds of a shared stack: the per-tenant cap of unfinished jobs, DELETE of jobs, datasets and adapters, cursor
paging and the free-space floor, against the real app and Redis."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.job_store import JobStore
from shared.storage import job_output_dir
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY

ALICE_KEY = "alice-" + uuid.uuid4().hex
BOB_KEY = "bob-" + uuid.uuid4().hex


@pytest.fixture
def app(settings, tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text(f"alice {ALICE_KEY}\nbob {BOB_KEY}\n")
    return create_app(settings.model_copy(update={"API_KEYS_FILE": keys, "MAX_ACTIVE_JOBS_PER_TENANT": 2}))


@pytest.fixture
def alice(app):
    with TestClient(app, headers={"X-API-Key": ALICE_KEY}) as client:
        yield client


@pytest.fixture
def bob(app):
    with TestClient(app, headers={"X-API-Key": BOB_KEY}) as client:
        yield client


def upload(client) -> str:
    response = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(3), "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_tenant_past_its_cap_of_unfinished_jobs_gets_429_naming_it(alice, bob):
    dataset = upload(alice)
    first = alice.post("/v1/jobs/predict", json={"dataset": dataset}).json()["job_id"]
    assert alice.post("/v1/jobs/predict", json={"dataset": dataset}).status_code == 202
    refused = alice.post("/v1/jobs/predict", json={"dataset": dataset}, headers={"Idempotency-Key": "k1"})
    assert refused.status_code == 429, refused.text
    assert "MAX_ACTIVE_JOBS_PER_TENANT" in refused.json()["detail"] and int(refused.headers["Retry-After"]) > 0
    assert len(alice.get("/v1/jobs").json()) == 2
    # Another tenant has its own count; a finished job frees a place (and the refused key may be used again).
    assert bob.post("/v1/jobs/predict", json={"dataset": upload(bob)}).status_code == 202
    assert alice.post(f"/v1/jobs/{first}/cancel").status_code == 200
    again = alice.post("/v1/jobs/predict", json={"dataset": dataset}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202, again.text


def test_delete_a_job_cancels_it_and_removes_its_record_files_and_idempotency_key(alice, bob, settings):
    dataset = upload(alice)
    headers = {"Idempotency-Key": "delete-me"}
    job_id = alice.post("/v1/jobs/predict", json={"dataset": dataset}, headers=headers).json()["job_id"]
    out_dir = job_output_dir(settings.SHARED_DIR, job_id)
    (out_dir / "chunks").mkdir(parents=True)
    (out_dir / "chunks" / "0.csv").write_text("x")
    assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404  # not bob's
    assert alice.get(f"/v1/jobs/{job_id}").json()["state"] == "dispatched"

    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 404
    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert not out_dir.exists() and not (settings.SHARED_DIR / "jobs" / f"{job_id}.json").exists()
    assert JobStore(settings.SHARED_DIR).active_ids() == []
    assert list((settings.SHARED_DIR / "jobs" / ".idempotency").glob("*.json")) == []
    # The key went with its job: the same request makes a new job, not a replay of a deleted one.
    replay = alice.post("/v1/jobs/predict", json={"dataset": dataset}, headers=headers)
    assert replay.status_code == 202 and replay.json()["job_id"] != job_id


def test_a_dataset_read_by_an_unfinished_job_cannot_be_deleted(alice, bob, settings):
    dataset = upload(alice)
    job_id = alice.post("/v1/jobs/predict", json={"dataset": dataset}).json()["job_id"]
    assert bob.delete(f"/v1/datasets/{dataset}").status_code == 404
    busy = alice.delete(f"/v1/datasets/{dataset}")
    assert busy.status_code == 409 and "unfinished job" in busy.json()["detail"]
    alice.post(f"/v1/jobs/{job_id}/cancel")
    assert alice.delete(f"/v1/datasets/{dataset}").status_code == 204
    assert alice.get(f"/v1/datasets/{dataset}").status_code == 404
    assert not (settings.SHARED_DIR / "datasets" / dataset).exists()
    assert alice.get("/v1/datasets").json() == []


def test_delete_an_adapter_unless_a_job_trains_it(alice, bob, settings):
    dataset = upload(alice)
    job_id = alice.post("/v1/jobs/train", json={"dataset": dataset, "adapter_name": "mine", "epochs": 1}).json()[
        "job_id"
    ]
    assert bob.delete("/v1/adapters/mine").status_code == 404
    assert alice.delete("/v1/adapters/mine").status_code == 409
    folder = settings.SHARED_DIR / "adapters" / "mine"
    (folder / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    alice.post(f"/v1/jobs/{job_id}/cancel")
    assert alice.delete("/v1/adapters/mine").status_code == 204
    assert not folder.exists() and alice.get("/v1/adapters/mine").status_code == 404
    assert alice.delete("/v1/adapters/mine").status_code == 404


def test_listings_page_with_a_cursor_and_keep_their_list_shape(client):
    dataset = upload(client)
    for _ in range(3):
        upload(client)
    job_ids = {client.post("/v1/jobs/synth", json={"dataset": dataset}).json()["job_id"] for _ in range(5)}
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 200 and isinstance(response.json(), list)
        seen += [job["id"] for job in response.json()]
        pages += 1
        after = response.headers.get("X-Next-Cursor")
        if after is None:
            assert "Link" not in response.headers
            break
        assert f"after={after}" in response.headers["Link"] and 'rel="next"' in response.headers["Link"]
    assert pages == 3 and len(seen) == 5 and set(seen) == job_ids
    created = [client.get(f"/v1/jobs/{job_id}").json()["created_at"] for job_id in seen]
    assert created == sorted(created, reverse=True)  # newest first across pages

    first = client.get("/v1/datasets", params={"limit": 3})
    rest = client.get("/v1/datasets", params={"limit": 3, "after": first.headers["X-Next-Cursor"]})
    assert len(first.json()) == 3 and len(rest.json()) == 1 and "X-Next-Cursor" not in rest.headers
    assert {info["id"] for info in first.json() + rest.json()} == {
        info["id"] for info in client.get("/v1/datasets").json()
    }
    assert client.get("/v1/jobs", params={"limit": 501}).status_code == 422
    assert client.get("/v1/jobs", params={"after": "not-a-cursor"}).status_code == 422


def test_below_min_free_bytes_uploads_and_new_jobs_get_507_with_the_reason(settings, client):
    dataset = upload(client)
    full = create_app(settings.model_copy(update={"MIN_FREE_BYTES": 10**18}))
    with TestClient(full, headers={"X-API-Key": API_KEY}) as tight:
        refused = tight.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(3), "text/csv")})
        assert refused.status_code == 507 and "MIN_FREE_BYTES" in refused.json()["detail"]
        job = tight.post("/v1/jobs/predict", json={"dataset": dataset})
        assert job.status_code == 507 and "MIN_FREE_BYTES" in job.json()["detail"]
        assert tight.get("/v1/jobs").json() == []  # nothing was recorded
        assert tight.get(f"/v1/datasets/{dataset}").status_code == 200  # reading still works


def test_deleting_an_unfinished_train_job_frees_its_adapter_name(alice, settings):
    dataset = upload(alice)
    body = {"dataset": dataset, "adapter_name": "half-done", "epochs": 1}
    job_id = alice.post("/v1/jobs/train", json=body).json()["job_id"]
    assert [adapter["name"] for adapter in alice.get("/v1/adapters").json()] == ["half-done"]
    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert alice.get("/v1/adapters").json() == []
    assert not (settings.SHARED_DIR / "adapters" / "half-done").exists()
    assert alice.post("/v1/jobs/train", json=body).status_code == 202  # the name is free again
