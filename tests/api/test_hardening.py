"""Gateway hardening (issue 14, item 3): hostile input gets a 4xx that names the fix, and nothing stored changes.

The real app over a temporary SHARED_DIR and the real Redis (no worker), as in the other tests/api files.
"""

from __future__ import annotations

import asyncio
import json

from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.conftest import API_KEY, snapshot


def call_asgi(app, *, method: str, path: str, headers: dict[str, str], body_chunks: list[bytes]):
    """Run one request straight through the ASGI app; returns (status, body, how many body chunks it read)."""
    reads = 0
    chunks = list(body_chunks)

    async def receive():
        nonlocal reads
        reads += 1
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], json.loads(body), reads


# --- the key is checked before any body is read -------------------------------------------------------------


def test_a_request_without_the_key_is_refused_before_its_body_is_read(settings):
    app = create_app(settings)
    body = json.dumps({"dataset": "a" * 32}).encode()
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        status_code, payload, reads = call_asgi(
            app,
            method="POST",
            path="/v1/jobs/predict",
            headers={**headers, "Content-Type": "application/json", "Content-Length": str(len(body))},
            body_chunks=[body],
        )
        assert status_code == 401 and "API key" in payload["detail"], payload
        assert reads == 0, "the body was read before the key was checked"


def test_a_huge_body_without_the_key_is_401_not_413(settings):
    app = create_app(settings)
    huge = str(50 * settings.MAX_UPLOAD_BYTES)
    for path in ("/v1/jobs/predict", "/v1/datasets"):
        status_code, payload, reads = call_asgi(
            app,
            method="POST",
            path=path,
            headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": huge},
            body_chunks=[b"x" * 1024] * 4,
        )
        assert (status_code, reads) == (401, 0), (path, status_code, payload)
        assert "API key" in payload["detail"]


# --- the body cap comes from the route, not from the client's Content-Type ------------------------------------


def test_a_json_route_sent_as_multipart_keeps_the_json_cap(settings):
    capped = settings.model_copy(update={"MAX_REQUEST_BYTES": 4096})
    body = b"x" * 20_000  # over MAX_REQUEST_BYTES, under MAX_UPLOAD_BYTES
    with TestClient(create_app(capped), headers={"X-API-Key": API_KEY}) as gateway:
        before = snapshot(settings.SHARED_DIR)
        declared = gateway.post(
            "/v1/jobs/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
        assert declared.status_code == 413, declared.text
        assert "MAX_REQUEST_BYTES" in declared.json()["detail"]
        chunked = gateway.post(
            "/v1/score",
            content=(body[start : start + 1024] for start in range(0, len(body), 1024)),
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert chunked.status_code == 413, chunked.text
        assert "MAX_REQUEST_BYTES" in chunked.json()["detail"]
        assert snapshot(settings.SHARED_DIR) == before


def test_the_upload_route_gets_the_upload_cap_whatever_its_content_type(settings):
    capped = settings.model_copy(update={"MAX_REQUEST_BYTES": 4096})
    from tests.api.arena_rows import arena_csv

    csv_bytes = arena_csv(40)
    assert 4096 < len(csv_bytes) < settings.MAX_UPLOAD_BYTES
    with TestClient(create_app(capped), headers={"X-API-Key": API_KEY}) as gateway:
        created = gateway.post("/v1/datasets", files={"file": ("pairs.csv", csv_bytes, "text/csv")})
        assert created.status_code == 201, created.text
        # A body over the upload cap is refused as an upload, even when it claims to be JSON.
        refused = gateway.post(
            "/v1/datasets",
            content=b"x" * (settings.MAX_UPLOAD_BYTES + 128 * 1024),
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 413 and "MAX_UPLOAD_BYTES" in refused.json()["detail"]


# --- /readyz: cheap, and nothing about hosts ------------------------------------------------------------------


def test_health_names_queues_not_hosts_and_asks_the_workers_at_most_every_few_seconds(settings, monkeypatch):
    app = create_app(settings)
    inspect_calls = []

    class FakeInspect:
        def active_queues(self):
            inspect_calls.append(1)
            return {
                "celery@gpu-box-7.internal.example": [{"name": "gpu.0"}],
                "celery@gpu-box-8.internal.example": [{"name": "gpu.0"}],
                "celery@cpu-box.internal.example": [{"name": "cpu"}],
            }

    monkeypatch.setattr(app.state.celery.control, "inspect", lambda **_: FakeInspect())
    with TestClient(app) as anonymous:
        responses = [anonymous.get("/readyz") for _ in range(3)]
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["workers"] == {"cpu": 1, "gpu.0": 2}
        assert "internal.example" not in response.text and "celery@" not in response.text
    assert len(inspect_calls) == 1, "every /readyz call broadcast an inspect that waits on busy workers"


def test_health_with_an_unreachable_broker_says_so_without_its_address(settings):
    unreachable = settings.model_copy(update={"REDIS_URL": "redis://:s3cret-pass@localhost:1/0"})
    with TestClient(create_app(unreachable)) as anonymous:
        health = anonymous.get("/readyz")
    assert health.status_code == 503
    assert health.json()["broker"].startswith("unreachable")
    for leak in ("localhost", "s3cret", "redis://", ":1", "Error", "refused"):
        assert leak not in health.text, (leak, health.text)


# --- upload cells: size and JSON nesting capped ----------------------------------------------------------------


def csv_with_cell(column: str, cell: str) -> bytes:
    """Two good rows, then row 3 (id 'bad') with `cell` in `column`."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "prompt", "response_a", "response_b"])
    writer.writerow(["1", '["Hi?"]', '["Hello."]', '["Hey."]'])
    writer.writerow(["2", '["Hi?"]', '["Hello."]', '["Hey."]'])
    row = {"id": "bad", "prompt": '["Hi?"]', "response_a": '["Hello."]', "response_b": '["Hey."]', column: cell}
    writer.writerow([row["id"], row["prompt"], row["response_a"], row["response_b"]])
    return buffer.getvalue().encode()


def test_a_cell_over_max_cell_bytes_is_422_naming_row_column_and_setting(settings):
    capped = settings.model_copy(update={"MAX_CELL_BYTES": 4096})
    with TestClient(create_app(capped), headers={"X-API-Key": API_KEY}) as gateway:
        before = snapshot(settings.SHARED_DIR)
        for column, cell in [("response_b", json.dumps(["é" * 3000])), ("id", "x" * 5000)]:
            response = gateway.post(
                "/v1/datasets", files={"file": ("big-cell.csv", csv_with_cell(column, cell), "text/csv")}
            )
            assert response.status_code == 422, response.text[:500]
            detail = response.json()["detail"]
            assert "row 3" in detail and repr(column) in detail and "MAX_CELL_BYTES" in detail, detail
            assert len(detail) < 1000, "the error message must not echo the huge cell"
        assert snapshot(settings.SHARED_DIR) == before


def test_deeply_nested_turns_are_422_naming_row_and_column(client, settings):
    before = snapshot(settings.SHARED_DIR)
    for cell in ["[" * 20_000 + "]" * 20_000, json.dumps([["nested"]]), json.dumps([{"role": "user"}])]:
        response = client.post("/v1/datasets", files={"file": ("deep.csv", csv_with_cell("prompt", cell), "text/csv")})
        assert response.status_code == 422, response.text[:500]
        detail = response.json()["detail"]
        assert "row 3" in detail and "'prompt'" in detail and "list of strings" in detail, detail
    assert snapshot(settings.SHARED_DIR) == before


# --- request numbers are range-checked -------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("/v1/jobs/train", "seed", 2**32),
    ("/v1/jobs/train", "seed", -1),
    ("/v1/jobs/train", "max_steps", 10**12),
    ("/v1/jobs/train", "time_budget_min", 10**9),
    ("/v1/jobs/train", "max_val_rows", 10**12),
    ("/v1/jobs/train", "lora_top_layers", 10**6),
    ("/v1/jobs/train", "epochs", 0),
    ("/v1/jobs/train", "learning_rate", 5),
    ("/v1/jobs/train", "lora_rank", 100_000),
    ("/v1/jobs/train", "lora_alpha", 0),
    ("/v1/jobs/train", "lora_dropout", 1.5),
    ("/v1/jobs/train", "max_length", 10**9),
    ("/v1/jobs/train", "batch_size", 0),
    ("/v1/jobs/train", "grad_accum", 10**6),
    ("/v1/jobs/train", "val_fraction", 1),
    ("/v1/jobs/train", "target_modules", ["q_proj"] * 1000),
    ("/v1/jobs/synth", "seed", 2**40),
    ("/v1/jobs/synth", "limit", 10**12),
    ("/v1/jobs/synth", "chunk_pairs", 0),
    ("/v1/jobs/synth", "rationale_tokens", 10**6),
    ("/v1/jobs/predict", "time_limit_s", 0),
]


def test_out_of_range_numbers_are_422_naming_the_field(client, settings):
    dataset = "a" * 32  # checked after the body: range errors come first (time_limit_s's cap: test_reliability)
    before = snapshot(settings.SHARED_DIR)
    for path, field, value in OUT_OF_RANGE:
        response = client.post(path, json={"dataset": dataset, field: value})
        assert response.status_code == 422, (path, field, value, response.status_code)
        errors = response.json()["detail"]
        assert any(error["loc"][-1] == field for error in errors), (field, errors)
    assert snapshot(settings.SHARED_DIR) == before


def test_non_finite_numbers_are_422(client):
    for path, field in [("/v1/jobs/train", "time_budget_min"), ("/v1/jobs/train", "epochs")]:
        for literal in ("Infinity", "NaN"):
            body = '{"dataset": "' + "a" * 32 + '", "' + field + '": ' + literal + "}"
            response = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (field, literal, response.text)


def test_a_422_does_not_echo_the_bad_input(client):
    response = client.post("/v1/jobs/train", json={"dataset": "a" * 32, "target_modules": ["x" * 50_000]})
    assert response.status_code == 422
    assert len(response.text) < 2000 and "xxxxxxxxxx" not in response.text


# --- the train route validates before 202 ------------------------------------------------------------------------


def upload(client, *, labelled: bool) -> str:
    from tests.api.arena_rows import arena_csv

    response = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(6, labelled=labelled), "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_train_refuses_unlabelled_data_and_unknown_models_before_202(client, settings):
    labelled, unlabelled = upload(client, labelled=True), upload(client, labelled=False)
    before = snapshot(settings.SHARED_DIR)
    cases = [
        ({"dataset": unlabelled}, 422, ["winner_model_a", unlabelled]),
        ({"dataset": labelled, "validation_dataset": unlabelled}, 422, ["validation_dataset", unlabelled]),
        ({"dataset": labelled, "extra_datasets": [{"dataset": unlabelled}]}, 422, ["extra_datasets", unlabelled]),
        ({"dataset": labelled, "model": "no-such-model"}, 422, ["no-such-model", "available"]),
        ({"dataset": labelled, "model": ".."}, 422, []),
    ]
    for body, expected, words in cases:
        response = client.post("/v1/jobs/train", json=body)
        assert response.status_code == expected, (body, response.text)
        detail = json.dumps(response.json()["detail"])
        for word in words:
            assert word in detail, (word, detail)
        assert str(settings.SHARED_DIR) not in detail
    assert client.get("/v1/jobs").json() == []
    assert snapshot(settings.SHARED_DIR) == before


def test_train_refuses_an_adapter_name_already_taken(client, settings):
    labelled = upload(client, labelled=True)
    existing = settings.SHARED_DIR / "adapters" / "judge-v1"
    existing.mkdir(parents=True)
    (existing / "adapter_config.json").write_text("{}")
    taken = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-v1"})
    assert taken.status_code == 409, taken.text
    assert "judge-v1" in taken.json()["detail"] and "another adapter_name" in taken.json()["detail"]

    key = {"Idempotency-Key": "train-judge-v2"}
    first = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-v2"}, headers=key)
    assert first.status_code == 202, first.text
    # The same request again (a client retry) is its own job, not a conflict with itself.
    replay = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-v2"}, headers=key)
    assert replay.status_code == 200 and replay.json()["job_id"] == first.json()["job_id"]
    # Another job for the name of a queued one: it would fail when the worker starts it.
    second = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-v2"})
    assert second.status_code == 409, second.text
    assert first.json()["job_id"] in second.json()["detail"] and "another adapter_name" in second.json()["detail"]
    client.post(f"/v1/jobs/{first.json()['job_id']}/cancel")
    assert client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-v2"}).status_code == 202
    assert len(client.get("/v1/jobs").json()) == 2


# --- error messages name files relative to SHARED_DIR ------------------------------------------------------------


def test_upload_errors_name_no_host_path(client, settings):
    for content in (b"", b"\n"):
        response = client.post("/v1/datasets", files={"file": ("empty.csv", content, "text/csv")})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "empty" in detail or "column" in detail, detail
        assert str(settings.SHARED_DIR) not in detail and "/tmp/" not in detail and ".upload-" not in detail, detail


def test_job_errors_are_stored_with_paths_relative_to_shared_dir(settings):
    from shared.job_store import JobStore
    from shared.schemas import ChunkRecord, JobRecord

    store = JobStore(settings.SHARED_DIR)
    store.create(
        JobRecord(id="f" * 32, kind="predict", chunks=[ChunkRecord(index=0, queue="cpu", start=0, stop=1, task_id="t")])
    )
    absolute = settings.SHARED_DIR / "adapters" / "judge-v1"
    store.update_chunk("f" * 32, 0, error=f"{absolute}/calibration.json is not valid JSON")
    record = store.fail("f" * 32, f"{absolute.resolve()} holds a checkpoint of a different training configuration")
    assert record.error == "adapters/judge-v1 holds a checkpoint of a different training configuration"
    assert record.chunks[0].error == "adapters/judge-v1/calibration.json is not valid JSON"


def test_non_finite_labels_are_422(client, settings):
    before = snapshot(settings.SHARED_DIR)
    for cell in ("nan", "inf", "-inf"):
        content = (
            'id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n1,"[""q""]","[""a""]","[""b""]",'
            f"{cell},0,0\n"
        ).encode()
        response = client.post("/v1/datasets", files={"file": ("labels.csv", content, "text/csv")})
        assert response.status_code == 422, (cell, response.text)
        assert "row 1" in response.json()["detail"] and "sum to 1" in response.json()["detail"]
    assert snapshot(settings.SHARED_DIR) == before


def test_synth_refuses_an_unknown_teacher_model_before_202(client):
    dataset = upload(client, labelled=False)
    response = client.post("/v1/jobs/synth", json={"dataset": dataset, "teacher_model": "no-such-teacher"})
    assert response.status_code == 422, response.text
    assert "no-such-teacher" in response.json()["detail"] and "available" in response.json()["detail"]
    assert client.get("/v1/jobs").json() == []
