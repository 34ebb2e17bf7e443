"""Builds the gateway app: `uvicorn --factory api.main:create_app` (scripts/stack.sh, compose)."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from api.dataset_store import DatasetStore
from api.dispatch import WorkerDirectory
from api.routes.main import api_router
from shared.celery_config import make_celery
from shared.job_store import JobStore
from shared.settings import Settings, get_settings
from shared.storage import ensure_layout

# Multipart framing around the file: the cap is checked again byte by byte while the file is copied.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class MissingApiKeyError(RuntimeError):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway: routes under /v1 (API key), /healthz and /docs (open).

    Raises:
        MissingApiKeyError: API_KEY is unset; the gateway never runs without one.
    """
    settings = settings or get_settings()
    if not settings.API_KEY:
        raise MissingApiKeyError(
            "API_KEY is not set: export API_KEY=<a long random string> (scripts/stack.sh generates one for the"
            " local stack); the gateway does not run without a key"
        )
    ensure_layout(settings.SHARED_DIR)
    app = FastAPI(
        title="arena-pref",
        summary="Pairwise preference judge (A / B / tie) as jobs: upload a Kaggle arena CSV, predict, download.",
        version="0.1.0",
    )
    celery = make_celery(settings, name="arena-gateway")
    app.state.settings = settings
    app.state.celery = celery
    app.state.job_store = JobStore(settings.SHARED_DIR)
    app.state.dataset_store = DatasetStore(settings.SHARED_DIR, max_bytes=settings.MAX_UPLOAD_BYTES)
    app.state.workers = WorkerDirectory(celery, settings)

    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next):
        # Refuse before the body is read when the client announces its size (it usually does).
        declared = request.headers.get("content-length")
        if request.method == "POST" and declared and declared.isdigit():
            if int(declared) > settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES:
                return JSONResponse(
                    {
                        "detail": f"the request body ({int(declared):,} bytes) exceeds the"
                        f" {settings.MAX_UPLOAD_BYTES:,}-byte cap (MAX_UPLOAD_BYTES); split the file"
                    },
                    status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                )
        return await call_next(request)

    app.include_router(api_router)
    return app
