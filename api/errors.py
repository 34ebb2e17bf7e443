"""The gateway's error answers: short, no host paths, and never more than about 1 KiB whatever the request held.

Every 4xx/5xx the app itself produces goes through these handlers (the middlewares in api/main.py answer with
short fixed texts). A message may quote what the client sent (an unknown field's name, an id that was not found, a
CSV header cell); each quoted string is cut to ECHO_CHARS, and the whole body to ERROR_BODY_BYTES, so a request of
several MB cannot make its own error that large.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from shared.storage import redact_host_paths

log = logging.getLogger(__name__)

ERROR_BODY_BYTES = 1024  # the most an error answer holds, whatever the request
DETAIL_BYTES = 900  # a route's message: room for the ones that list what exists, cut before the body cap
MSG_BYTES = 200  # what to fix, in one validation error (pydantic's msg may quote the input)
LOC_BYTES = 64  # a field name in `loc`: real ones are short, an unknown one can be the size of the body


def _json_bytes(value) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def clip(text: str, max_bytes: int) -> str:
    """`text`, or as much of its start as fits `max_bytes` once written as a JSON string, and how long it was.

    Measured as JSON, not as characters: a character can take 4 bytes in UTF-8, a control character 6 escaped.
    """
    if _json_bytes(text) - 2 <= max_bytes:
        return text
    suffix = f"… ({len(text):,} characters)"
    low, high = 0, min(len(text), max_bytes)  # every character takes at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        if _json_bytes(text[:middle] + suffix) - 2 <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return text[:low] + suffix


def validation_errors_body(errors: list[dict]) -> dict:
    """FastAPI's 422 body, trimmed: where (loc), what (type) and what to fix (msg) of each error, without the
    rejected `input` (a NaN there made the 422 itself fail, a huge one was sent back whole) or `ctx`; long strings
    cut, and only as many errors as fit ERROR_BODY_BYTES, the rest counted in a last entry."""
    trimmed = [
        {
            "type": clip(str(error.get("type", "")), LOC_BYTES),
            "loc": [item if isinstance(item, int) else clip(str(item), LOC_BYTES) for item in error.get("loc", ())],
            "msg": clip(str(error.get("msg", "")), MSG_BYTES),
        }
        for error in errors
    ]

    def more(count: int) -> dict:
        return {"type": "more_errors", "loc": [], "msg": f"{count:,} more error(s) not shown; fix these first"}

    shown: list[dict] = []
    for index, error in enumerate(trimmed):
        rest = len(trimmed) - index - 1
        if _json_bytes({"detail": [*shown, error, *([more(rest)] if rest else [])]}) > ERROR_BODY_BYTES:
            return {"detail": [*shown, more(len(trimmed) - len(shown))]}
        shown.append(error)
    return {"detail": shown}


def _public_detail(detail, settings):
    """A route's message as a client may see it: host paths out, cut to DETAIL_BYTES."""
    if not isinstance(detail, str):
        if _json_bytes(jsonable_encoder(detail)) <= DETAIL_BYTES:
            return detail
        detail = json.dumps(jsonable_encoder(detail), ensure_ascii=False)
    if settings is not None:
        detail = redact_host_paths(detail, settings.SHARED_DIR)
    return clip(detail, DETAIL_BYTES)


def allowed_methods(request: Request) -> str | None:
    """Every documented method of the request's path, for a 405's Allow header; None for an undocumented path.

    Starlette's own 405 names the methods of the first route whose path matched: with GET and DELETE as two routes
    on one path, its Allow said GET only (RFC 9110 asks for all of them). Literal paths first, as the router's
    (/v1/jobs/predict is not /v1/jobs/{job_id}).
    """
    paths = request.app.openapi()["paths"]
    for template in sorted(paths, key=lambda path: (path.count("{"), -len(path))):
        if compile_path(template)[0].match(request.scope["path"]):
            methods = {method.upper() for method in paths[template]}
            return ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))  # Starlette serves HEAD
    return None


def install_error_handlers(app: FastAPI) -> None:
    """The app's handlers for invalid requests (422), HTTP errors (routes, FastAPI, Starlette) and any other
    exception (500)."""

    @app.exception_handler(RequestValidationError)
    async def describe_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{key: error[key] for key in ("type", "loc", "msg") if key in error} for error in exc.errors()]
        return JSONResponse(validation_errors_body(errors), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StarletteHTTPException)
    async def describe_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routes build their messages from what they were sent (an id that was not found, a CSV's header, a
        # worker's error): each is cut here, so no route can echo a large input or name a host path.
        if not is_body_allowed_for_status_code(exc.status_code):
            return Response(status_code=exc.status_code, headers=exc.headers)
        detail = _public_detail(exc.detail, getattr(request.app.state, "settings", None))
        headers = exc.headers
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and (allowed := allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allowed}
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def hide_internal_errors(request: Request, exc: Exception) -> JSONResponse:
        # The log keeps the traceback; the client gets neither the trace nor host paths, only where to look.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the gateway log has the details"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
