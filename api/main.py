"""Builds the gateway app: `uvicorn --factory api.main:create_app` (scripts/stack.sh, compose)."""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI, HTTPException, status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import authenticate
from api.dispatch import ScoreCapacity, WorkerDirectory
from api.errors import install_error_handlers
from api.idempotency import IdempotencyStore
from api.metrics import GatewayMetrics, MetricsMiddleware
from api.openapi import install_openapi
from api.routes.main import api_router
from api.tenants import TenantDirectory
from shared.celery_config import make_celery
from shared.dataset_store import DatasetStore, UploadsBusyError
from shared.job_store import JobStore
from shared.log_format import configure_root_logging, log_context, use_log_format
from shared.settings import Settings, get_settings
from shared.storage import ensure_layout
from shared.worker_presence import redis_client

log = logging.getLogger(__name__)

# Multipart framing around the file: the cap is checked again byte by byte while the file is copied.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class MissingApiKeyError(RuntimeError):
    pass


class ApiKeyGate:
    """Refuse /v1/* requests without the right key (401) before the app reads a byte of their body.

    FastAPI reads and parses a request's body before it runs the route's dependencies, so `require_api_key`
    alone would let anyone make the gateway receive (and for an upload, stage) a body. The dependency stays
    for the OpenAPI docs; this gate is what answers first. /healthz and the docs stay open.
    """

    def __init__(self, app: ASGIApp, *, tenants: TenantDirectory) -> None:
        self.app = app
        self.tenants = tenants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        provided = headers.get("x-api-key")
        if provided is None:
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            provided = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
        outcome = authenticate(provided, self.tenants)
        if isinstance(outcome, str):
            response = JSONResponse(
                {"detail": outcome}, status_code=status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = outcome  # read by require_api_key (request.state): once a request
        with log_context(tenant=outcome.name):  # on each line the request logs, its access line included
            await self.app(scope, receive, send)


# An upload at the caps validates in a few seconds: one refused for want of a slot may come back after this long.
UPLOAD_RETRY_AFTER_S = 5
# Routes whose body is a dataset file (MAX_UPLOAD_BYTES); every other body gets MAX_REQUEST_BYTES.
UPLOAD_ROUTES = frozenset({("POST", "/v1/datasets")})


class BodySizeLimit:
    """Refuse request bodies over their route's cap: uploads MAX_UPLOAD_BYTES, any other body MAX_REQUEST_BYTES.

    The cap follows the route, never the client's Content-Type: a JSON route sent as multipart/form-data keeps
    the small cap. A declared Content-Length over the cap is refused before anything is read; a body without
    one (chunked) is counted as it streams in and refused (413) the moment it passes the cap, so nothing big is
    ever buffered.
    """

    def __init__(self, app: ASGIApp, *, upload_bytes: int, request_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.request_bytes = request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if (scope["method"], scope["path"].rstrip("/")) in UPLOAD_ROUTES:
            cap, setting = self.upload_bytes + MULTIPART_OVERHEAD_BYTES, "MAX_UPLOAD_BYTES"
            hint = "split the file"
        else:
            cap, setting, hint = self.request_bytes, "MAX_REQUEST_BYTES", "send less, or upload a dataset instead"
        detail = f"the request body exceeds the {cap:,}-byte cap ({setting}); {hint}"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            response = JSONResponse({"detail": detail}, status_code=status.HTTP_413_CONTENT_TOO_LARGE)
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # FastAPI re-raises HTTPExceptions from body parsing: the client gets this 413.
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=detail)
            return message

        await self.app(scope, counted_receive, send)


class UploadSlots:
    """Take one of MAX_CONCURRENT_UPLOADS upload slots before an upload's body is read; hold it to the answer.

    FastAPI reads and stages a multipart body before the route runs, so a slot taken in the route came after the
    gateway had received the whole file: uploads past the cap still cost their bytes. Here one more upload gets
    503 with Retry-After before a byte of its body is read. It sits inside the key gate: a caller without a valid
    key never takes a slot.
    """

    def __init__(self, app: ASGIApp, *, datasets: DatasetStore) -> None:
        self.app = app
        self.datasets = datasets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/")) not in UPLOAD_ROUTES:
            await self.app(scope, receive, send)
            return
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.datasets.upload_slot())
            except UploadsBusyError as exc:
                response = JSONResponse(
                    {"detail": str(exc)},
                    status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                    headers={"Retry-After": str(UPLOAD_RETRY_AFTER_S)},
                )
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway: routes under /v1 (API key), /healthz, /docs and the results page /ui (open; it holds no data).

    Raises:
        MissingApiKeyError: neither API_KEY nor API_KEYS_FILE is set; the gateway never runs without a key.
    """
    settings = settings or get_settings()
    configure_root_logging(settings.LOG_FORMAT)
    use_log_format(settings.LOG_FORMAT, ("uvicorn", "uvicorn.access"))  # uvicorn's own handlers, set up already
    if not settings.API_KEY and settings.API_KEYS_FILE is None:
        raise MissingApiKeyError(
            "API_KEY is not set: export API_KEY=<a long random string> (scripts/stack.sh generates one for the"
            " local stack), or API_KEYS_FILE=<a file of '<tenant> <key>' lines>; the gateway does not run without a"
            " key"
        )
    ensure_layout(settings.SHARED_DIR)
    app = FastAPI(
        title="arena-pref",
        summary="Pairwise preference judge (A / B / tie) as jobs: upload a Kaggle arena CSV, predict, download.",
        version="0.1.0",
    )
    install_openapi(app)  # one error shape in the document (api/openapi.py)
    celery = make_celery(settings, name="arena-gateway")
    app.state.settings = settings
    app.state.celery = celery
    app.state.job_store = JobStore(settings.SHARED_DIR)
    app.state.dataset_store = DatasetStore(
        settings.SHARED_DIR,
        max_bytes=settings.MAX_UPLOAD_BYTES,
        max_cell_bytes=settings.MAX_CELL_BYTES,
        max_rows=settings.MAX_UPLOAD_ROWS,
        max_columns=settings.MAX_UPLOAD_COLUMNS,
        max_name_chars=settings.MAX_NAME_CHARS,
        max_concurrent_uploads=settings.MAX_CONCURRENT_UPLOADS,
    )
    app.state.workers = WorkerDirectory(celery, settings)
    app.state.score_capacity = ScoreCapacity(settings.SCORE_MAX_IN_FLIGHT)
    app.state.idempotency = IdempotencyStore(settings.SHARED_DIR)
    app.state.tenants = TenantDirectory(admin_key=settings.API_KEY, keys_file=settings.API_KEYS_FILE)

    app.add_middleware(UploadSlots, datasets=app.state.dataset_store)  # innermost: after the key and the size cap
    app.add_middleware(BodySizeLimit, upload_bytes=settings.MAX_UPLOAD_BYTES, request_bytes=settings.MAX_REQUEST_BYTES)
    # Added after (so outside) the body cap: a caller without the key learns nothing, not even the cap.
    app.add_middleware(ApiKeyGate, tenants=app.state.tenants)
    if settings.CORS_ALLOW_ORIGINS:  # off unless configured: no browser on another origin may call the API
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ALLOW_ORIGINS,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=["X-Next-Cursor", "Link", "Retry-After"],
        )

    app.state.metrics = GatewayMetrics(
        settings=settings,
        jobs=app.state.job_store,
        in_flight=lambda: app.state.score_capacity.in_flight,
        client=redis_client(settings),
    )
    # Outermost: it counts what the key gate and the body cap refuse too.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, openapi=app.openapi)

    install_error_handlers(app)  # short answers: no host paths, about 1 KiB at most whatever the request

    app.include_router(api_router)
    return app
