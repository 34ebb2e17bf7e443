"""The OpenAPI document as a contract: one error shape, and every status a route answers declared with it.

Every error the gateway (api/errors.py) and the proxy in front of it (compose/nginx.conf.template) answer is
`{"detail": ...}`: a sentence that names the fix, or for a request that does not fit the schema FastAPI's list of
validation errors. `ErrorBody` declares both; `install_openapi` puts it in place of FastAPI's default 422 schema
(HTTPValidationError, whose `detail` is only a list), so a client generated from the document (openapi-python-client,
openapi-generator) parses every error answer. Routes pick their statuses from the families below, attached at the
router (401, the proxy's) or the route (the rest); tests/integration/test_openapi_contract.py runs schemathesis
against the gateway behind the proxy to hold the document to what is answered.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

ERROR_BODY_REF = "#/components/schemas/ErrorBody"


class ValidationErrorItem(BaseModel):
    """One problem of a request that does not fit the schema (FastAPI's validation error, trimmed)."""

    type: str = Field(description="The kind of problem, e.g. `missing`, `string_pattern_mismatch`, `more_errors`.")
    loc: list[str | int] = Field(description="Where: `body`, `query`, `path` or `header`, then the field's path.")
    msg: str = Field(description="What to fix.")


class ErrorBody(BaseModel):
    """Every error answer of the API (4xx and 5xx), from the gateway and from its proxy."""

    detail: str | list[ValidationErrorItem] = Field(
        description="One line that says what went wrong and what to do; for a request that does not fit the schema"
        " (most 422s), the list of its problems."
    )


# Each status once, with every reason it has across the API: a route that declares it answers it for one of them.
ERROR_DESCRIPTIONS = {
    400: "The body could not be parsed (not UTF-8 JSON, or a broken multipart upload).",
    401: "Missing or wrong API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    404: "No such job, dataset or adapter, or it belongs to another tenant (the same answer).",
    409: "A conflict: the Idempotency-Key was used for a different request, the adapter name is taken, the job has"
    " finished already, or the dataset or adapter is used by an unfinished job.",
    413: "The body is over its cap (MAX_REQUEST_BYTES; for uploads MAX_UPLOAD_BYTES, MAX_UPLOAD_ROWS, MAX_CELL_BYTES).",
    422: "The request does not fit the schema (`detail` lists the problems), or a check the route makes refused it"
    " (`detail` says why: e.g. a file that is not a Kaggle arena CSV, judge files a worker could not load).",
    429: "Too many: the tenant's unfinished jobs (MAX_ACTIVE_JOBS_PER_TENANT), score requests waiting"
    " (SCORE_MAX_IN_FLIGHT), or the proxy's per-address rate. Retry after `Retry-After` seconds.",
    502: "The worker failed on a score request, or the gateway behind the proxy did not answer.",
    503: "Not now: the broker does not answer, no worker is up, MAX_CONCURRENT_UPLOADS uploads are being checked,"
    " or the proxy's cap of requests in progress. Retry after `Retry-After` seconds where it is sent.",
    504: "No worker answered the score request within SCORE_TIMEOUT_S.",
    507: "The shared storage is below MIN_FREE_BYTES free: nothing was stored. Delete old jobs and datasets.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses` declaring `codes` with ErrorBody and their descriptions."""
    return {code: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# What the proxy answers on any route (its rate and connection caps, a gateway that does not answer).
EDGE_RESPONSES = error_responses(429, 502, 503)
# Every /v1 route: the key is checked first.
V1_RESPONSES = error_responses(401)
# A route that reads a body: it may not parse, or be over the cap (422 is added for every body by FastAPI).
BODY_RESPONSES = error_responses(400, 413)
# GET /v1/jobs/{id} and the like: the item may not exist, or be another tenant's.
ITEM_RESPONSES = error_responses(404)
# DELETE of a dataset or adapter, POST /v1/jobs/{id}/cancel: missing, or in a state that refuses it.
ITEM_CHANGE_RESPONSES = error_responses(404, 409)
# POST /v1/jobs/*: what it names may be missing, its key or adapter name taken, the tenant at its cap, the broker
# down, the disk full.
CREATE_JOB_RESPONSES = {**BODY_RESPONSES, **error_responses(404, 409, 429, 503, 507)}
UPLOAD_RESPONSES = {**BODY_RESPONSES, **error_responses(503, 507)}
SCORE_RESPONSES = {**BODY_RESPONSES, **error_responses(404, 429, 502, 503, 504)}
# The listings' next page (api/paging.py); absent on the last page.
PAGE_HEADERS = {
    200: {
        "headers": {
            "X-Next-Cursor": {
                "description": "The `after` of the next page; absent on the last one.",
                "schema": {"type": "string"},
            },
            "Link": {
                "description": 'The next page\'s URL, `<...>; rel="next"` (RFC 8288); absent on the last one.',
                "schema": {"type": "string"},
            },
        }
    }
}


def _one_error_shape(document: dict) -> None:
    """Point FastAPI's default 422 answers at ErrorBody and drop its own error schemas: one shape in the document."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    schema["$ref"] = ERROR_BODY_REF
                    response["description"] = ERROR_DESCRIPTIONS[422]
    schemas = document.get("components", {}).get("schemas", {})
    if "ErrorBody" not in schemas:
        raise RuntimeError("no route declares ErrorBody: attach EDGE_RESPONSES to the routers (api/routes/main.py)")
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    """Serve the app's document with one error shape."""
    build = app.openapi

    def openapi() -> dict:
        document = build()  # FastAPI's, cached until the routes change; made over once per build
        _one_error_shape(document)
        return document

    app.openapi = openapi
