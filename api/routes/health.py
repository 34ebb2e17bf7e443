"""GET /healthz: the gateway, the broker and the workers answering."""

import logging
from collections import Counter

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import WorkersDep
from shared.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def read_health(workers: WorkersDep):
    """Gateway up, broker reachable, at least one worker answering: 200; otherwise 503 with what is missing.

    Open to anyone, so it says no more than that: workers by queue and count (no host names), and the broker as
    ok/unreachable (its exception text names the Redis host; the gateway log has it). Cheap enough to poll, and
    fast under any load: async (no request thread), from a view of the broker and workers reused for a second or
    two and never waited on for more than half a second (api/dispatch.py, WorkerDirectory.health).
    """
    view = await workers.health()
    broker = view.broker
    if broker != "ok":
        log.warning("health: the broker is %s", broker)
        broker = "unreachable"
    queue_workers = Counter(queue for queues in view.workers.values() for queue in queues)
    healthy = broker == "ok" and bool(view.workers)
    body = Health(status="ok" if healthy else "degraded", broker=broker, workers=dict(sorted(queue_workers.items())))
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
