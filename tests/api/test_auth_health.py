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
    health = anonymous.get("/healthz")
    # The broker answers but no worker runs in these tests: degraded, and it says why.
    assert health.status_code == 503
    assert health.json()["broker"] == "ok"
    assert health.json()["workers"] == {}


def test_health_reports_an_unreachable_broker(settings):
    from fastapi.testclient import TestClient

    app = create_app(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    with TestClient(app) as test_client:
        health = test_client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["broker"].startswith("unreachable")
