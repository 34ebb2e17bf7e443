"""Every dependency of the routes, as an Annotated alias; the objects themselves live on app.state."""

from __future__ import annotations

import secrets
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.dispatch import WorkerDirectory
from api.idempotency import IdempotencyStore
from shared.dataset_store import DatasetStore
from shared.job_store import JobStore
from shared.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_job_store(request: Request) -> JobStore:
    return request.app.state.job_store


def get_dataset_store(request: Request) -> DatasetStore:
    return request.app.state.dataset_store


def get_workers(request: Request) -> WorkerDirectory:
    return request.app.state.workers


def get_idempotency(request: Request) -> IdempotencyStore:
    return request.app.state.idempotency


SettingsDep = Annotated[Settings, Depends(get_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]
WorkersDep = Annotated[WorkerDirectory, Depends(get_workers)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API_KEY>")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API_KEY>")
KEY_HINT = "send the key as 'Authorization: Bearer <API_KEY>' or 'X-API-Key: <API_KEY>'"


def require_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header_key: Annotated[str | None, Security(_api_key_header)],
) -> None:
    provided = header_key if header_key is not None else (bearer.credentials if bearer is not None else None)
    if provided is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=f"missing API key: {KEY_HINT}", headers={"WWW-Authenticate": "Bearer"}
        )
    # Constant-time comparison: the time taken says nothing about how much of the key matched.
    if not secrets.compare_digest(provided.encode(), (settings.API_KEY or "").encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=f"wrong API key: {KEY_HINT}", headers={"WWW-Authenticate": "Bearer"}
        )
