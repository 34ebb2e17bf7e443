"""GET /healthz: the gateway, the broker and the workers answering."""

import logging
from collections import Counter

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import WorkersDep
from api.dispatch import BrokerUnavailableError
from shared.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def read_health(workers: WorkersDep):
    """Gateway up, broker reachable, at least one worker answering: 200; otherwise 503 with what is missing.

    Open to anyone, so it says no more than that: workers by queue and count (no host names), and the broker as
    ok/unreachable (its exception text names the Redis host; the gateway log has it). Cheap enough to poll: the
    worker view is the directory's few-seconds cache, never a fresh broadcast that waits on busy workers.
    """
    broker = workers.broker_reachable()
    active = {}
    if broker == "ok":
        try:
            # A solo-pool worker busy with a task does not answer a broadcast: recently seen means still there.
            active = workers.active_queues() or workers.recently_seen()
        except BrokerUnavailableError:
            log.warning("health: the worker broadcast failed", exc_info=True)
            broker = "unreachable"
    else:
        log.warning("health: the broker is %s", broker)
        broker = "unreachable"
    queue_workers = Counter(queue for queues in active.values() for queue in queues)
    healthy = broker == "ok" and bool(active)
    body = Health(status="ok" if healthy else "degraded", broker=broker, workers=dict(sorted(queue_workers.items())))
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
