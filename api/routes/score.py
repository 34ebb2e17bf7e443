"""POST /v1/score: a few inline pairs scored synchronously by a worker, under a short timeout."""

import logging

from celery.exceptions import TimeoutError as CeleryTimeoutError
from fastapi import APIRouter, HTTPException, status

from api.deps import CeleryDep, SettingsDep, WorkersDep
from api.dispatch import BrokerUnavailableError, score_pairs
from api.routes.jobs import check_judge_files
from shared.routing import predict_queues
from shared.schemas import ScoreRequest, ScoreResponse

log = logging.getLogger(__name__)
router = APIRouter(prefix="/score", tags=["score"])


@router.post("", response_model=ScoreResponse)
def score(request: ScoreRequest, settings: SettingsDep, celery: CeleryDep, workers: WorkersDep) -> ScoreResponse:
    """Probabilities (A, B, tie) for a few pairs, synchronously, through the same queues as jobs."""
    if len(request.pairs) > settings.SCORE_MAX_PAIRS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"{len(request.pairs)} pairs is more than SCORE_MAX_PAIRS={settings.SCORE_MAX_PAIRS};"
            " upload a dataset and submit a predict job instead",
        )
    check_judge_files(settings, request)
    try:
        active = workers.active_queues() or workers.recently_seen()  # busy workers do not answer broadcasts
    except BrokerUnavailableError:
        log.warning("the broker does not answer", exc_info=True)  # names the Redis host: the log, not the client
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the broker at REDIS_URL does not answer; retry in a few seconds, and check that Redis is running",
            headers={"Retry-After": "5"},
        ) from None
    if not active:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="no worker is up (none announced itself recently); start one (make up)",
        )
    queue = predict_queues(active, fallback=settings.FALLBACK_QUEUE)[0]
    try:
        result = score_pairs(celery, request.model_dump(), queue=queue, timeout=settings.SCORE_TIMEOUT_S)
    except CeleryTimeoutError:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            detail=f"no worker answered within SCORE_TIMEOUT_S={settings.SCORE_TIMEOUT_S}s (busy with a job, or"
            " loading its model); retry, or submit a predict job",
        ) from None
    except Exception as exc:
        log.warning("score task failed", exc_info=True)
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            detail=f"the worker failed ({type(exc).__name__}); retry, or submit a predict job and read its error",
        ) from None
    if "error" in result:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=result["error"])
    return ScoreResponse.model_validate(result)
