import json

import pytest

from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.storage import job_output_dir
from tests.api.arena_rows import arena_csv
from tests.api.conftest import snapshot


@pytest.fixture
def dataset_id(client) -> str:
    return client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(3), "text/csv")}).json()["id"]


def test_predict_job_is_sent_as_one_chunk_to_the_fallback_queue_when_no_worker_is_up(client, dataset_id, settings):
    response = client.post("/v1/jobs/predict", json={"dataset": dataset_id})
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "dispatched"
    job_id = response.json()["job_id"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    # dispatched: the record says its tasks were sent (a record left "queued" is one the sweeper sends).
    assert job["state"] == "dispatched" and job["kind"] == "predict"
    assert job["dispatched_at"] and all(chunk["sent_at"] for chunk in job["chunks"])
    assert job["progress"] == {"done": 0, "total": 3}
    assert [(chunk["queue"], chunk["start"], chunk["stop"]) for chunk in job["chunks"]] == [
        (settings.FALLBACK_QUEUE, 0, 3)
    ]
    assert job["params"] == {
        "dataset": dataset_id,
        "model": None,
        "adapter": None,
        "calibration": None,
        "raw": False,
        "tta": True,
        "time_limit_s": None,
    }
    assert (settings.SHARED_DIR / "jobs" / f"{job_id}.json").is_file()


def test_cancel_a_queued_job(client, dataset_id):
    job_id = client.post("/v1/jobs/predict", json={"dataset": dataset_id}).json()["job_id"]
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["timings"]["total_seconds"] is not None
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_list_jobs_filters(client, dataset_id):
    predict_id = client.post("/v1/jobs/predict", json={"dataset": dataset_id}).json()["job_id"]
    train_id = client.post("/v1/jobs/train", json={"dataset": dataset_id, "epochs": 1}).json()["job_id"]
    synth_id = client.post("/v1/jobs/synth", json={"dataset": dataset_id}).json()["job_id"]
    client.post(f"/v1/jobs/{predict_id}/cancel")
    assert [job["id"] for job in client.get("/v1/jobs").json()] == [synth_id, train_id, predict_id]
    assert [job["id"] for job in client.get("/v1/jobs", params={"kind": "train"}).json()] == [train_id]
    assert [job["id"] for job in client.get("/v1/jobs", params={"state": "cancelled"}).json()] == [predict_id]
    assert client.get("/v1/jobs", params={"state": "exploded"}).status_code == 422
    assert client.get("/v1/jobs", params={"kind": "bake"}).status_code == 422


BAD_PREDICT_BODIES = {
    "unknown-dataset": ({"dataset": "0" * 32}, 404, "no dataset"),
    "malformed-dataset-id": ({"dataset": "../../etc"}, 422, "dataset"),
    "missing-dataset": ({}, 422, "dataset"),
    "unknown-model": ({"model": "no-such-model"}, 422, "not found"),
    "model-path-trick": ({"model": "../datasets"}, 422, "model"),
    "absolute-model": ({"model": "/etc"}, 422, "model"),
    "unknown-adapter": ({"adapter": "judge-v9"}, 422, "adapter"),
    "calibration-escape": ({"calibration": "models/../../../etc/passwd"}, 422, "calibration"),
    "calibration-outside": ({"calibration": "jobs/x.json"}, 422, "models/ or adapters/"),
    "calibration-missing": ({"calibration": "models/none.json"}, 422, "not found"),
    "model-without-calibration": ({"model": "SmolLM2-135M-Instruct"}, 422, "raw=true"),
    "raw-and-calibration": ({"raw": True, "calibration": "models/none.json"}, 422, "drop one"),
    "typo-field": ({"ttaa": False}, 422, "ttaa"),
    "tta-not-bool": ({"tta": "maybe"}, 422, "tta"),
}


@pytest.mark.parametrize("case", BAD_PREDICT_BODIES)
def test_bad_predict_requests_are_4xx_and_store_nothing(client, dataset_id, settings, case):
    body, status_code, expected = BAD_PREDICT_BODIES[case]
    body = {"dataset": dataset_id, **body} if "dataset" not in body and case != "missing-dataset" else body
    before = snapshot(settings.SHARED_DIR)
    response = client.post("/v1/jobs/predict", json=body)
    assert response.status_code == status_code, response.text
    assert expected in json.dumps(response.json()["detail"])
    assert snapshot(settings.SHARED_DIR) == before


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b"null", b'"dataset"', b""],
    ids=["broken", "list", "null", "string", "empty"],
)
def test_bad_json_bodies_are_422(client, content, settings):
    before = snapshot(settings.SHARED_DIR)
    for path in ("/v1/jobs/predict", "/v1/jobs/train", "/v1/jobs/synth", "/v1/score"):
        response = client.post(path, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (path, response.text)
    assert snapshot(settings.SHARED_DIR) == before


def test_bad_train_and_synth_parameters(client, dataset_id):
    assert client.post("/v1/jobs/train", json={"dataset": "f" * 32}).status_code == 404
    assert client.post("/v1/jobs/train", json={"dataset": dataset_id, "epochs": -1}).status_code == 422
    assert client.post("/v1/jobs/train", json={"dataset": dataset_id, "lora_rank": "big"}).status_code == 422
    assert client.post("/v1/jobs/synth", json={"rows": 3}).status_code == 422
    assert client.post("/v1/jobs/synth", json={"dataset": dataset_id, "rationale_tokens": -1}).status_code == 422
    missing = client.post("/v1/jobs/synth", json={"dataset": "e" * 32})
    assert missing.status_code == 404 and "upload" in missing.json()["detail"]


@pytest.mark.parametrize("job_id", ["0" * 32])
def test_unknown_job_is_404(client, job_id):
    for method, path in [("get", ""), ("post", "/cancel"), ("get", "/artifacts/submission.csv")]:
        response = getattr(client, method)(f"/v1/jobs/{job_id}{path}")
        assert response.status_code == 404, (path, response.text)
        assert "no job" in response.json()["detail"]


def test_malformed_job_id_is_422(client):
    assert client.get("/v1/jobs/not-a-job").status_code == 422


@pytest.fixture
def finished_job(settings) -> str:
    """A succeeded job record with one artefact, and a file beside the job folder that must stay unreachable."""
    job_id = "a" * 32
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id=job_id, kind="predict"))
    output_dir = job_output_dir(settings.SHARED_DIR, job_id)
    output_dir.mkdir(parents=True)
    (output_dir / "submission.csv").write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.4,0.4,0.2\n")
    (settings.SHARED_DIR / "submissions" / "secret.txt").write_text("not yours")
    store.succeed(job_id, artifacts=["submission.csv"], result={})
    return job_id


def test_download_an_artifact(client, finished_job):
    response = client.get(f"/v1/jobs/{finished_job}/artifacts/submission.csv")
    assert response.status_code == 200
    assert response.text.startswith("id,winner_model_a")


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fsecret.txt",
        "%2E%2E%2Fsecret.txt",
        "%2E%2E",
        "...",
        ".hidden",
        "chunks",
        "metrics.json",
        "%2Fetc%2Fpasswd",
        "..%5Csecret.txt",
        "submission.csv%00.txt",
    ],
)
def test_artifact_path_tricks_are_4xx(client, finished_job, name):
    response = client.get(f"/v1/jobs/{finished_job}/artifacts/{name}")
    assert 400 <= response.status_code < 500, (name, response.status_code)
    assert "not yours" not in response.text


def test_score_limits_and_no_worker(client, settings):
    pair = {"prompt": "Hi?", "response_a": "Hello!", "response_b": ["Hey."]}
    too_many = client.post("/v1/score", json={"pairs": [pair] * (settings.SCORE_MAX_PAIRS + 1)})
    assert too_many.status_code == 422 and "SCORE_MAX_PAIRS" in too_many.json()["detail"]
    assert client.post("/v1/score", json={"pairs": []}).status_code == 422
    assert client.post("/v1/score", json={"pairs": [{"prompt": "Hi?"}]}).status_code == 422
    assert client.post("/v1/score", json={"pairs": [pair], "model": "nope"}).status_code == 422
    no_worker = client.post("/v1/score", json={"pairs": [pair]})
    assert no_worker.status_code == 503 and "no worker" in no_worker.json()["detail"]


def test_gateway_imports_no_model_code():
    import subprocess
    import sys

    heavy = ("torch", "vllm", "transformers", "sklearn", "workers.predictor.predictor")
    code = f"import sys; import api.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_plain_predict_gets_the_default_predictor_and_says_how_to_make_it_when_missing(client, dataset_id, settings):
    import shutil

    assert client.post("/v1/jobs/predict", json={"dataset": dataset_id}).status_code == 202
    shutil.rmtree(settings.SHARED_DIR / "models" / "default")
    before = snapshot(settings.SHARED_DIR)
    response = client.post("/v1/jobs/predict", json={"dataset": dataset_id})
    assert response.status_code == 422
    assert "make setup" in response.json()["detail"] and "--text-only" in response.json()["detail"]
    assert snapshot(settings.SHARED_DIR) == before
    # Raw votes need no predictor, only the judge model, and only when asked for.
    assert client.post("/v1/jobs/predict", json={"dataset": dataset_id, "raw": True}).status_code == 202


def test_jobs_go_to_the_queues_workers_announce_even_when_busy_workers_cannot_answer_a_broadcast(
    client, dataset_id, settings, monkeypatch
):
    """Two GPU workers that announce themselves in Redis (as workers/background.py does every heartbeat) make the
    job's chunks go to the shared gpu queue they both pull from, with no `inspect` broadcast, which a solo worker
    busy with a chunk could not answer."""
    from shared.worker_presence import announce, redis_client

    def no_broadcast(**_kwargs):
        raise AssertionError("the gateway broadcast an inspect although workers announce themselves")

    monkeypatch.setattr(client.app.state.celery.control, "inspect", no_broadcast)
    monkeypatch.setattr(settings, "PREDICT_CHUNK_ROWS", 2)
    redis = redis_client(settings)
    announce(redis, settings, "gpu0@box", ["gpu", "gpu.0"])
    announce(redis, settings, "gpu1@box", ["gpu", "gpu.1"])
    job_id = client.post("/v1/jobs/predict", json={"dataset": dataset_id}).json()["job_id"]
    chunks = client.get(f"/v1/jobs/{job_id}").json()["chunks"]
    assert [(chunk["queue"], chunk["start"], chunk["stop"]) for chunk in chunks] == [("gpu", 0, 2), ("gpu", 2, 3)]
    health = client.get("/readyz").json()
    assert health["workers"] == {"gpu": 2, "gpu.0": 1, "gpu.1": 1} and "box" not in str(health)


def test_a_leaderboard_job_needs_a_labelled_dataset_with_model_names(client):
    def upload(content: bytes) -> str:
        response = client.post("/v1/datasets", files={"file": ("pairs.csv", content, "text/csv")})
        assert response.status_code == 201, response.text
        assert response.json()["model_names"] is True  # the arena columns include model_a and model_b
        return response.json()["id"]

    ranked = upload(arena_csv(6, models=("m1", "m2", "m3")))
    accepted = client.post("/v1/jobs/leaderboard", json={"dataset": ranked, "bootstrap": 50, "seed": 3})
    assert accepted.status_code == 202, accepted.text
    job = client.get(f"/v1/jobs/{accepted.json()['job_id']}").json()
    assert job["kind"] == "leaderboard" and job["params"]["bootstrap"] == 50 and job["queue"] == "cpu"

    unlabelled = client.post("/v1/jobs/leaderboard", json={"dataset": upload(arena_csv(3, labelled=False))})
    assert unlabelled.status_code == 422 and "has no labels" in unlabelled.json()["detail"]
    assert "predict job" in unlabelled.json()["detail"]  # where a predicted leaderboard comes from
    nameless_csv = (
        b"id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"
        b'1,"[""q""]","[""a""]","[""b""]",1,0,0\n'
    )
    nameless = client.post("/v1/datasets", files={"file": ("pairs.csv", nameless_csv, "text/csv")}).json()["id"]
    refused = client.post("/v1/jobs/leaderboard", json={"dataset": nameless})
    assert refused.status_code == 422 and "no model_a and model_b columns" in refused.json()["detail"]
    too_many = client.post("/v1/jobs/leaderboard", json={"dataset": ranked, "bootstrap": 100_000})
    assert too_many.status_code == 422
    assert client.post("/v1/jobs/leaderboard", json={"dataset": "e" * 32}).status_code == 404
