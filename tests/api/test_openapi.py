"""The OpenAPI document as a contract (api/openapi.py): one error shape, every status declared, constraints in the
schema; and the answers that schemathesis found breaking it (tests/integration/test_openapi_contract.py runs it)."""

from __future__ import annotations

from api.openapi import ERROR_BODY_REF, ErrorBody
from api.paging import decode_cursor


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_answer_is_declared_with_the_one_error_shape(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for label, operation in operations(document):
        errors = {code: response for code, response in operation["responses"].items() if int(code) >= 400}
        assert {"429", "502", "503"} <= set(errors), label  # the proxy's, on every route
        if label == "GET /readyz":
            errors.pop("503")  # not ready: the readiness report itself (Health), with its reasons
        for code, response in errors.items():
            assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_BODY_REF}, (label, code)
        if " /v1" in label:
            assert "401" in errors, label
    by_label = dict(operations(document))
    for kind in ("predict", "train", "leaderboard", "synth"):
        declared = set(by_label[f"POST /v1/jobs/{kind}"]["responses"])
        assert {"202", "400", "401", "404", "409", "413", "422", "429", "503", "507"} <= declared, kind
    assert {"400", "413", "422", "503", "507"} <= set(by_label["POST /v1/datasets"]["responses"])
    assert {"404", "409"} <= set(by_label["DELETE /v1/datasets/{dataset_id}"]["responses"])
    assert {"404", "422"} <= set(by_label["GET /v1/jobs/{job_id}"]["responses"])
    assert {"429", "504"} <= set(by_label["POST /v1/score"]["responses"])


def test_constraints_are_in_the_schema(client):
    by_label = dict(operations(client.get("/openapi.json").json()))
    [key] = [p for p in by_label["POST /v1/jobs/predict"]["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and key["schema"]["anyOf"][0]["pattern"] == r"^[\x21-\x7e]{1,255}$"
    [dataset_id] = by_label["GET /v1/datasets/{dataset_id}"]["parameters"]
    assert dataset_id["schema"]["pattern"] == "^[0-9a-f]{32}$"
    after = {p["name"]: p for p in by_label["GET /v1/jobs"]["parameters"]}["after"]
    assert after["schema"]["anyOf"][0]["pattern"].startswith("^([0-9a-f]{1,16})-")
    assert set(by_label["GET /v1/jobs"]["responses"]["200"]["headers"]) == {"X-Next-Cursor", "Link"}


def test_string_and_list_details_both_fit_the_error_body(client):
    sentence = client.post("/v1/jobs/predict", json={"dataset": "f" * 32})  # a route's own check: a sentence
    listed = client.post("/v1/jobs/predict", json={})  # the schema's: a list
    malformed_key = client.post("/v1/jobs/predict", json={"dataset": "f" * 32}, headers={"Idempotency-Key": "a b"})
    assert (sentence.status_code, listed.status_code, malformed_key.status_code) == (404, 422, 422)
    assert isinstance(ErrorBody.model_validate(sentence.json()).detail, str)
    assert ErrorBody.model_validate(listed.json()).detail[0].loc == ["body", "dataset"]
    assert ErrorBody.model_validate(malformed_key.json()).detail[0].loc == ["header", "Idempotency-Key"]


def test_a_405_names_every_method_of_the_path(client):
    # GET and DELETE are two routes on one path: Starlette's own Allow named the first one only.
    options = client.options(f"/v1/jobs/{'a' * 32}")
    assert options.status_code == 405 and options.headers["allow"] == "DELETE, GET, HEAD"
    # /v1/jobs/predict is not a job id: GET there is a 405 naming POST, not a 422 for a malformed id.
    wrong_method = client.get("/v1/jobs/predict")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert isinstance(wrong_method.json()["detail"], str)
    assert client.get("/v1/jobs/not-a-job").status_code == 422


def test_a_cursor_past_year_9999_is_a_422_not_a_500(client):
    cursor = f"{'f' * 16}-{'0' * 32}"
    response = client.get("/v1/jobs", params={"after": cursor})
    assert response.status_code == 422 and "X-Next-Cursor" in response.text
    assert decode_cursor(f"1-{'0' * 32}")[1] == "0" * 32
