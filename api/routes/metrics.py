"""GET /metrics: the gateway's Prometheus metrics (api/metrics.py), for the admin key or a loopback client only."""

import secrets

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep
from api.openapi import error_responses

router = APIRouter(tags=["health"])
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _may_scrape(request: Request, admin_key: str | None) -> bool:
    """The admin key (API_KEY; tenants' keys do not count: metrics cover every tenant), or a loopback client that
    did not come through the proxy (nginx on the same host connects from loopback and always adds X-Forwarded-For)."""
    headers = request.headers
    provided = headers.get("x-api-key")
    if provided is None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        provided = credentials.strip() if scheme.lower() == "bearer" else None
    if provided and admin_key and secrets.compare_digest(provided.encode(), admin_key.encode()):
        return True
    client = request.client.host if request.client else ""
    return client in LOOPBACK and "x-forwarded-for" not in headers


@router.get("/metrics", response_class=Response, responses=error_responses(401))
async def read_metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus text format: requests, latency, refusals, score requests in flight, jobs, queue depths."""
    if not _may_scrape(request, settings.API_KEY):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="metrics need the admin key (API_KEY) as 'Authorization: Bearer <API_KEY>', or a loopback client",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # A scrape reads the job records and asks Redis: a thread of the pool, not the event loop.
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
