"""Every dependency of the routes, as an Annotated alias; the objects themselves live on app.state."""

from __future__ import annotations

import shutil
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.dispatch import ScoreCapacity, WorkerDirectory
from api.idempotency import IdempotencyStore
from api.tenants import Tenant, TenantDirectory
from shared.dataset_store import DatasetStore
from shared.job_store import JobStore
from shared.settings import Settings


# The dependencies are async: a sync one is run in the request thread pool, and each such hop costs a GIL
# handover (up to 5 ms under load). /healthz and POST /v1/score must answer without waiting on that pool.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


async def get_job_store(request: Request) -> JobStore:
    return request.app.state.job_store


async def get_dataset_store(request: Request) -> DatasetStore:
    return request.app.state.dataset_store


async def get_workers(request: Request) -> WorkerDirectory:
    return request.app.state.workers


async def get_score_capacity(request: Request) -> ScoreCapacity:
    return request.app.state.score_capacity


async def get_idempotency(request: Request) -> IdempotencyStore:
    return request.app.state.idempotency


SettingsDep = Annotated[Settings, Depends(get_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]
WorkersDep = Annotated[WorkerDirectory, Depends(get_workers)]
ScoreCapacityDep = Annotated[ScoreCapacity, Depends(get_score_capacity)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API_KEY>")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API_KEY>")
KEY_HINT = "send the key as 'Authorization: Bearer <API_KEY>' or 'X-API-Key: <API_KEY>'"


def authenticate(provided: str | None, tenants: TenantDirectory) -> Tenant | str:
    """The tenant whose key `provided` is, or why it is not a key (the 401 detail).

    Shared by `require_api_key` and the ASGI gate in api/main.py (which checks before any body is read).
    """
    if provided is None:
        return f"missing API key: {KEY_HINT}"
    tenant = tenants.resolve(provided)
    if tenant is None:
        return f"wrong API key: {KEY_HINT}"
    return tenant


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header_key: Annotated[str | None, Security(_api_key_header)],
) -> Tenant:
    """The request's tenant, resolved once per request (the ApiKeyGate in api/main.py usually did it already)."""
    tenant = getattr(request.state, "tenant", None)
    if isinstance(tenant, Tenant):
        return tenant
    provided = header_key if header_key is not None else (bearer.credentials if bearer is not None else None)
    outcome = authenticate(provided, request.app.state.tenants)
    if isinstance(outcome, str):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=outcome, headers={"WWW-Authenticate": "Bearer"})
    request.state.tenant = outcome
    return outcome


TenantDep = Annotated[Tenant, Depends(require_api_key)]


async def require_free_space(settings: SettingsDep) -> None:
    """507 when SHARED_DIR has less than MIN_FREE_BYTES free: an upload or a job would fill the disk that every
    job, record and Redis snapshot shares."""
    try:
        free = shutil.disk_usage(settings.SHARED_DIR).free
    except OSError:
        return  # GET /readyz reports an unreadable SHARED_DIR; the write itself will fail with its own error
    if free < settings.MIN_FREE_BYTES:
        raise HTTPException(
            status.HTTP_507_INSUFFICIENT_STORAGE,
            detail=f"the shared storage has {free:,} bytes free, below MIN_FREE_BYTES ({settings.MIN_FREE_BYTES:,});"
            " nothing was stored. Delete finished jobs and datasets you no longer need (DELETE /v1/jobs/{id},"
            " DELETE /v1/datasets/{id}), or ask the operator to grow the volume",
        )


FreeSpaceDep = Depends(require_free_space)
