"""Mounts the resource routers: everything under /v1 needs the API key; /healthz, /ui (the results page, which holds
no data) and the docs do not."""

from fastapi import APIRouter, Depends

from api.deps import require_api_key
from api.openapi import EDGE_RESPONSES, V1_RESPONSES
from api.routes import adapters, auth_check, datasets, health, jobs, metrics, score, ui, whoami

api_router = APIRouter(responses=EDGE_RESPONSES)  # the proxy in front may answer these on any route
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(ui.router)
v1_router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=V1_RESPONSES)
v1_router.include_router(adapters.router)
v1_router.include_router(auth_check.router)
v1_router.include_router(datasets.router)
v1_router.include_router(jobs.router)
v1_router.include_router(score.router)
v1_router.include_router(whoami.router)
api_router.include_router(v1_router)
