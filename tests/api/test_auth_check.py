"""GET /v1/auth-check: the proxy's auth_request target answers from the gateway's one key check, reading nothing."""

from __future__ import annotations

from tests.api.conftest import API_KEY


def test_a_valid_key_gets_204_with_no_body(client, anonymous):
    answer = client.get("/v1/auth-check")
    assert answer.status_code == 204 and answer.content == b""
    assert anonymous.get("/v1/auth-check", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 204


def test_a_missing_or_wrong_key_gets_401(anonymous):
    assert anonymous.get("/v1/auth-check", headers={"X-API-Key": "wrong"}).status_code == 401
    answer = anonymous.get("/v1/auth-check")
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
