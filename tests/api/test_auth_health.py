import pytest

from api.main import MissingApiKeyError, create_app
from tests.api.conftest import API_KEY


def test_gateway_refuses_to_start_without_a_key(settings):
    with pytest.raises(MissingApiKeyError, match="API_KEY is not set"):
        create_app(settings.model_copy(update={"API_KEY": None}))


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}],
    ids=["none", "wrong-header", "wrong-bearer", "not-bearer"],
)
def test_v1_routes_need_the_key(anonymous, headers):
    for method, path in [
        ("get", "/v1/datasets"),
        ("get", "/v1/jobs"),
        ("post", "/v1/jobs/predict"),
        ("post", "/v1/score"),
    ]:
        response = getattr(anonymous, method)(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert "API key" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}])
def test_either_header_carries_the_key(anonymous, headers):
    assert anonymous.get("/v1/datasets", headers=headers).status_code == 200


def test_health_and_docs_are_open(anonymous):
    assert anonymous.get("/docs").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 200
    # Liveness: the process answers, whatever Redis or the workers do.
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    # The broker answers but no worker runs in these tests: not ready, and it says why.
    assert ready.status_code == 503
    assert ready.json()["broker"] == "ok"
    assert ready.json()["workers"] == {}
    assert ready.json()["reasons"] == ["no live worker consumes a job queue (cpu, gpu): start a worker"]


def test_health_reports_an_unreachable_broker(settings):
    from fastapi.testclient import TestClient

    app = create_app(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    with TestClient(app) as test_client:
        alive = test_client.get("/healthz")
        health = test_client.get("/readyz")
    assert alive.status_code == 200
    assert health.status_code == 503
    assert health.json()["broker"].startswith("unreachable")
    assert health.json()["reasons"][0].startswith("redis unreachable: check that Redis runs")


def test_ready_once_a_worker_consumes_a_job_queue_and_not_below_the_free_space_floor(settings):
    """A live worker on the cpu queue makes the stack ready; the same stack with a floor above the disk's free space
    is not, and says which setting to look at. A worker on a queue no job goes to does not count."""
    import shutil

    from fastapi.testclient import TestClient

    from shared.worker_presence import announce, redis_client, withdraw

    redis = redis_client(settings)
    announce(redis, settings, "side@box", ["score-only"])
    try:
        with TestClient(create_app(settings)) as anonymous:
            not_yet = anonymous.get("/readyz")
        assert not_yet.status_code == 503 and "no live worker consumes a job queue" in not_yet.json()["reasons"][0]
        announce(redis, settings, "cpu@box", ["cpu"])
        with TestClient(create_app(settings)) as anonymous:
            ready = anonymous.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["reasons"] == [] and ready.json()["workers"] == {"cpu": 1, "score-only": 1}
        free = shutil.disk_usage(settings.SHARED_DIR).free
        floor = free + 10 * 1024**4  # far above whatever the disk frees meanwhile
        with TestClient(create_app(settings.model_copy(update={"MIN_FREE_BYTES": floor}))) as anonymous:
            full = anonymous.get("/readyz")
            alive = anonymous.get("/healthz")
        assert alive.status_code == 200
        assert full.status_code == 503, full.text
        (reason,) = full.json()["reasons"]
        assert reason.startswith("SHARED_DIR has ") and "below MIN_FREE_BYTES" in reason
        assert str(settings.SHARED_DIR) not in full.text  # the name of the setting, never the host path
    finally:
        withdraw(redis, settings, "side@box")
        withdraw(redis, settings, "cpu@box")
