"""GET /metrics on the real app (real Redis): who may scrape, and what the names, labels and counts say."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY

PAIR = {"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) → value."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_admin_key_unless_the_client_is_on_loopback(settings):
    app = create_app(settings)
    with TestClient(app) as outsider:
        refused = outsider.get("/metrics")
        wrong = outsider.get("/metrics", headers={"X-API-Key": "not-the-key"})
        allowed = outsider.get("/metrics", headers={"X-API-Key": API_KEY})
    assert refused.status_code == wrong.status_code == 401 and "API_KEY" in refused.json()["detail"]
    assert allowed.status_code == 200 and "arena_http_requests_total" in allowed.text
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.get("/metrics").status_code == 200
        # nginx on the same host connects from loopback too, and always says whom for: the key is needed then.
        assert local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401


def test_requests_are_counted_by_route_template_and_status(client):
    for job_id in ("a" * 32, "b" * 32, "c" * 32):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get("/no/such/page/1").status_code == 404
    assert client.get("/v1/jobs", headers={"X-API-Key": "wrong"}).status_code == 401  # refused before routing
    samples = scrape(client)
    assert value(samples, "arena_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="404") == 3
    assert value(samples, "arena_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert value(samples, "arena_http_requests_total", method="GET", route="/v1/jobs", status="401") == 1
    assert not any("aaaa" in str(labels) or "/no/such" in str(labels) for _, labels in samples)
    count = value(
        samples, "arena_http_request_duration_seconds_count", method="GET", route="/v1/jobs/{job_id}", status="404"
    )
    assert count == 3


def test_refusals_by_reason_and_score_requests_in_flight(settings):
    with TestClient(
        create_app(settings.model_copy(update={"SCORE_MAX_IN_FLIGHT": 1})), headers={"X-API-Key": API_KEY}
    ) as client:
        capacity = client.app.state.score_capacity
        with capacity.claim():  # one score request waiting on a worker: the only place
            busy = client.post("/v1/score", json={"pairs": [PAIR]})
            during = scrape(client)
        assert busy.status_code == 429, busy.text
        assert client.get("/readyz").status_code == 503  # no worker in these tests
        after = scrape(client)
    assert value(during, "arena_score_requests_in_flight") == 1
    assert value(after, "arena_score_requests_in_flight") == 0
    assert value(after, "arena_http_refusals_total", status="429", reason="score_capacity") == 1
    assert value(after, "arena_http_refusals_total", status="503", reason="not_ready") == 1


def test_jobs_and_queue_depth_are_read_at_scrape_time(client, settings):
    client.app.state.metrics.stack.cache_s = 0  # every scrape reads the records (the gateway caches 10 s)
    dataset = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(3), "text/csv")}).json()["id"]
    before = scrape(client)
    assert value(before, "arena_redis_up") == 1
    assert value(before, "arena_queue_messages", queue="cpu") == 0
    for _ in range(2):
        assert client.post("/v1/jobs/predict", json={"dataset": dataset}).status_code == 202
    after = scrape(client)
    jobs = {labels: count for (name, labels), count in after.items() if name == "arena_jobs"}
    assert sum(jobs.values()) == 2, jobs
    ((labels, count),) = jobs.items()
    assert dict(labels)["kind"] == "predict" and count == 2
    # No worker consumes cpu here: each job's chunk waits there (the fallback queue).
    assert value(after, "arena_queue_messages", queue="cpu") == 2


def test_a_scrape_with_redis_down_still_answers(settings):
    with TestClient(create_app(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))) as client:
        samples = scrape(client)
    assert value(samples, "arena_redis_up") == 0


def test_the_job_gauge_reads_a_finished_record_once_and_drops_a_deleted_one(client, settings, monkeypatch):
    """Each scrape read every record ever written (jobs.list over all of them); a finished one never changes."""
    stack = client.app.state.metrics.stack
    stack.cache_s = 0
    dataset = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(3), "text/csv")}).json()["id"]
    ids = [client.post("/v1/jobs/predict", json={"dataset": dataset}).json()["job_id"] for _ in range(3)]
    store = client.app.state.job_store
    store.update(ids[0], lambda record: setattr(record, "state", "succeeded"))
    scrape(client)  # reads all three: the finished one for the last time
    reads = []
    real_read = store.read
    monkeypatch.setattr(store, "read", lambda job_id: reads.append(job_id) or real_read(job_id))
    jobs = {dict(labels)["state"]: count for (name, labels), count in scrape(client).items() if name == "arena_jobs"}
    assert sorted(reads) == sorted(ids[1:]), "only unfinished records are read again"
    assert jobs["succeeded"] == 1 and sum(jobs.values()) == 3, jobs
    assert client.delete(f"/v1/jobs/{ids[0]}").status_code in (200, 204)
    jobs = {labels: count for (name, labels), count in scrape(client).items() if name == "arena_jobs"}
    assert sum(jobs.values()) == 2 and all(dict(labels)["state"] != "succeeded" for labels in jobs), jobs
