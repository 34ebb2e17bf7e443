"""Gateway reliability: idempotent submission, a restarted gateway, and what the API surface gives away.

The real app over a temporary SHARED_DIR and the real Redis (no worker: jobs stay queued). Faults with workers
(killed worker, Redis restart, time limits) are in tests/integration/test_faults.py and test_redis_restart.py.
"""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.settings import REPO_ROOT
from shared.storage import job_output_dir
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY, snapshot


@pytest.fixture
def dataset_id(client) -> str:
    return client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(3), "text/csv")}).json()["id"]


def new_client(settings, **kwargs) -> TestClient:
    """Another gateway instance over the same SHARED_DIR and Redis (a restart, or a second replica)."""
    return TestClient(create_app(settings), headers={"X-API-Key": API_KEY}, **kwargs)


# --- 1. Idempotency-Key ------------------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_job(client, dataset_id):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key)
    assert first.status_code == 202, first.text
    # Field order and spelled-out defaults do not make it another request.
    again = client.post("/v1/jobs/predict", json={"tta": True, "dataset": dataset_id}, headers=key)
    assert again.status_code == 200, again.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert [job["id"] for job in client.get("/v1/jobs").json()] == [first.json()["job_id"]]

    without_key = [client.post("/v1/jobs/predict", json={"dataset": dataset_id}) for _ in range(2)]
    assert [response.status_code for response in without_key] == [202, 202]
    assert len({response.json()["job_id"] for response in without_key} | {first.json()["job_id"]}) == 3


def test_the_same_key_with_another_request_is_a_conflict(client, dataset_id):
    key = {"Idempotency-Key": "order-42"}
    job_id = client.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key).json()["job_id"]
    for path, body in [
        ("/v1/jobs/predict", {"dataset": dataset_id, "tta": False}),
        ("/v1/jobs/train", {"dataset": dataset_id}),
        ("/v1/jobs/synth", {"dataset": dataset_id, "limit": 3}),
    ]:
        response = client.post(path, json=body, headers=key)
        assert response.status_code == 409, (path, response.text)
        detail = response.json()["detail"]
        assert "already used for a different request" in detail and job_id in detail and "fresh" in detail
    assert len(client.get("/v1/jobs").json()) == 1


@pytest.mark.parametrize(
    "key", ["", "has space", "x" * 256, "naïve".encode()], ids=["empty", "space", "long", "non-ascii"]
)
def test_a_malformed_idempotency_key_is_422(client, dataset_id, key):
    response = client.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in json.dumps(response.json()["detail"])
    assert client.get("/v1/jobs").json() == []


def test_concurrent_requests_with_one_key_on_two_gateways_create_one_job(client, settings, dataset_id):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with new_client(settings) as replica:
        with ThreadPoolExecutor(4) as pool:
            responses = list(
                pool.map(
                    lambda gateway: gateway.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key),
                    [client, replica, client, replica],
                )
            )
    assert sorted(response.status_code for response in responses) == [200, 200, 200, 202]
    assert len({response.json()["job_id"] for response in responses}) == 1
    assert len(client.get("/v1/jobs").json()) == 1


def test_a_request_refused_for_a_dead_broker_can_be_retried_with_its_key(settings, dataset_id):
    """503 with a clear message while Redis is unreachable; the key is not burnt, so the retry creates the job."""
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with new_client(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"})) as no_broker:
        refused = no_broker.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key)
        assert refused.status_code == 503, refused.text
        assert "job queue is unavailable" in refused.json()["detail"] and refused.headers["Retry-After"]
        for leak in ("127.0.0.1", ":1", "Error", "refused"):  # the broker's address and exception stay in the log
            assert leak not in refused.json()["detail"], refused.json()["detail"]
        assert no_broker.get("/v1/jobs").json() == []  # job records are read from shared storage, not Redis
    with new_client(settings) as gateway:
        accepted = gateway.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key)
        assert accepted.status_code == 202, accepted.text


# --- 2. A restarted gateway --------------------------------------------------------------------------------


def test_a_restarted_gateway_serves_the_same_jobs_states_and_artefacts(client, settings, dataset_id):
    key = {"Idempotency-Key": "restart-check"}
    queued = client.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key).json()["job_id"]
    cancelled = client.post("/v1/jobs/predict", json={"dataset": dataset_id}).json()["job_id"]
    client.post(f"/v1/jobs/{cancelled}/cancel")
    client.post("/v1/jobs/train", json={"dataset": dataset_id})
    # A finished job as a worker leaves it: its files, then the record naming them.
    finished = "b" * 32
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=finished, kind="predict"))
    output_dir = job_output_dir(settings.SHARED_DIR, finished)
    output_dir.mkdir(parents=True)
    (output_dir / "submission.csv").write_text("id,winner_model_a,winner_model_b,winner_tie\n7,0.5,0.3,0.2\n")
    store.succeed(finished, artifacts=["submission.csv"], result={"rows": 1})

    def view(gateway: TestClient) -> dict:
        jobs = gateway.get("/v1/jobs").json()
        return {
            "jobs": jobs,
            "each": {job["id"]: gateway.get(f"/v1/jobs/{job['id']}").json() for job in jobs},
            "artefact": gateway.get(f"/v1/jobs/{finished}/artifacts/submission.csv").content,
            "datasets": gateway.get("/v1/datasets").json(),
        }

    before = view(client)
    assert len(before["jobs"]) == 4 and before["artefact"].startswith(b"id,")
    assert {job["state"] for job in before["jobs"]} == {"dispatched", "cancelled", "succeeded"}
    client.close()  # the old gateway is gone

    with new_client(settings) as restarted:
        assert view(restarted) == before
        replay = restarted.post("/v1/jobs/predict", json={"dataset": dataset_id}, headers=key)
        assert replay.status_code == 200 and replay.json()["job_id"] == queued


# --- 7. Secrets and surface --------------------------------------------------------------------------------


def test_the_api_key_is_compared_in_constant_time(client, anonymous, monkeypatch):
    import hmac
    import secrets

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(secrets, "compare_digest", spy)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert anonymous.get("/v1/jobs", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/v1/jobs").status_code == 200
    assert len(calls) == 2, "the API key must be checked with secrets.compare_digest / hmac.compare_digest"


def test_the_api_key_never_reaches_logs_or_stored_files(client, anonymous, settings, dataset_id, caplog):
    caplog.set_level(logging.DEBUG)
    job_id = client.post("/v1/jobs/predict", json={"dataset": dataset_id}).json()["job_id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    client.get(f"/v1/jobs/{job_id}")
    anonymous.get("/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}x"})  # a near miss
    assert API_KEY not in caplog.text
    for path in settings.SHARED_DIR.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in json.dumps(client.get(f"/v1/jobs/{job_id}").json())


def test_cors_is_off_by_default_and_opt_in(client, settings):
    origin = {"Origin": "https://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    assert "access-control-allow-origin" not in client.get("/v1/jobs", headers=origin).headers
    assert "access-control-allow-origin" not in client.options("/v1/jobs/predict", headers=preflight).headers

    allowed = settings.model_copy(update={"CORS_ALLOW_ORIGINS": ["https://ui.example"]})
    with new_client(allowed) as gateway:
        ok = gateway.options("/v1/jobs/predict", headers={**preflight, "Origin": "https://ui.example"})
        assert ok.headers.get("access-control-allow-origin") == "https://ui.example"
        assert "access-control-allow-origin" not in gateway.get("/v1/jobs", headers=origin).headers


def test_request_bodies_are_capped_even_without_content_length(settings):
    capped = settings.model_copy(update={"MAX_REQUEST_BYTES": 4096})
    pair = {"prompt": "Hi?", "response_a": "x" * 5000, "response_b": "y"}
    with new_client(capped) as gateway:
        declared = gateway.post("/v1/score", json={"pairs": [pair]})
        assert declared.status_code == 413 and "MAX_REQUEST_BYTES" in declared.json()["detail"]
        body = json.dumps({"pairs": [pair]}).encode()
        chunked = gateway.post(
            "/v1/score",
            content=(body[start : start + 1024] for start in range(0, len(body), 1024)),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413, chunked.text
        assert "MAX_REQUEST_BYTES" in chunked.json()["detail"]

        before = snapshot(settings.SHARED_DIR)
        upload = arena_csv(8) * (settings.MAX_UPLOAD_BYTES // len(arena_csv(8)) + 2)
        refused = gateway.post("/v1/datasets", files={"file": ("big.csv", upload, "text/csv")})
        assert refused.status_code == 413 and "MAX_UPLOAD_BYTES" in refused.json()["detail"]
        assert snapshot(settings.SHARED_DIR) == before


def test_error_responses_carry_no_trace_and_no_host_path(client, settings, dataset_id):
    (settings.SHARED_DIR / "jobs" / f"{'c' * 32}.json").write_text("{ half a record")  # a corrupt record
    listed_but_gone = "d" * 32
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=listed_but_gone, kind="predict"))
    store.succeed(listed_but_gone, artifacts=["submission.csv"], result={})
    no_default_model = settings.model_copy(update={"MODEL_PATH": str(settings.SHARED_DIR / "models" / "absent")})

    with new_client(settings, raise_server_exceptions=False) as gateway:
        responses = {
            "corrupt-record": gateway.get(f"/v1/jobs/{'c' * 32}"),
            "unknown-job": gateway.get(f"/v1/jobs/{'0' * 32}"),
            "missing-artefact": gateway.get(f"/v1/jobs/{listed_but_gone}/artifacts/submission.csv"),
            "unknown-dataset": gateway.post("/v1/jobs/predict", json={"dataset": "e" * 32}),
            "bad-csv": gateway.post("/v1/datasets", files={"file": ("x.csv", b"id,prompt\n1,hi\n", "text/csv")}),
            "unknown-model": gateway.post("/v1/jobs/predict", json={"dataset": dataset_id, "model": "nope"}),
            "path-trick": gateway.post("/v1/jobs/predict", json={"dataset": dataset_id, "model": "../jobs"}),
            "too-long-limit": gateway.post("/v1/jobs/predict", json={"dataset": dataset_id, "time_limit_s": 10**9}),
        }
    with new_client(no_default_model) as gateway:
        responses["no-default-model"] = gateway.post("/v1/jobs/predict", json={"dataset": dataset_id, "raw": True})

    assert responses["corrupt-record"].status_code == 500
    assert responses["too-long-limit"].status_code == 422
    assert "JOB_TIME_LIMIT_S" in responses["too-long-limit"].json()["detail"]
    assert responses["no-default-model"].status_code == 422
    for name, response in responses.items():
        assert 400 <= response.status_code < 600, (name, response.status_code)
        assert response.json()["detail"], name  # JSON with a message, whatever went wrong
        for leak in ("Traceback", 'File "', str(settings.SHARED_DIR), str(REPO_ROOT), "/tmp/", "/work/"):
            assert leak not in response.text, (name, leak, response.text)
