"""GET /healthz: the gateway, the broker and the workers answering."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import WorkersDep
from api.dispatch import BrokerUnavailableError
from shared.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def read_health(workers: WorkersDep):
    """Gateway up, broker reachable, at least one worker answering: 200; otherwise 503 with what is missing."""
    broker = workers.broker_reachable()
    active = {}
    if broker == "ok":
        try:
            active = workers.active_queues(fresh=True)
        except BrokerUnavailableError as exc:
            broker = str(exc)
    healthy = broker == "ok" and bool(active)
    body = Health(status="ok" if healthy else "degraded", broker=broker, workers=active)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
