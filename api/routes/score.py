"""POST /v1/score: a few inline pairs scored synchronously by a worker, under a short timeout.

Async: a waiting request holds no thread (it polls its result in Redis), and at most SCORE_MAX_IN_FLIGHT wait at
once; one more gets 429 at once. The rest of the gateway keeps answering however many clients wait on scores.
"""

import logging

from celery.exceptions import TimeoutError as CeleryTimeoutError
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from api.deps import CeleryDep, ScoreCapacityDep, SettingsDep, TenantDep, WorkersDep
from api.dispatch import BrokerUnavailableError, ClientGoneError, ScoreCapacityError, WorkerDirectory, score_pairs
from api.openapi import SCORE_RESPONSES
from api.routes.jobs import check_judge_files
from api.tenants import Tenant
from shared.routing import job_queue
from shared.schemas import ScoreRequest, ScoreResponse
from shared.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/score", tags=["score"])
BUSY_RETRY_AFTER_S = 5


def broker_unavailable() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="the broker at REDIS_URL does not answer; retry in a few seconds, and check that Redis is running",
        headers={"Retry-After": "5"},
    )


def _score_queue(settings: Settings, request: ScoreRequest, workers: WorkerDirectory, tenant: Tenant) -> str:
    """The judge files checked and the queue to send to (blocking: file checks, maybe a broadcast); run in a
    thread."""
    check_judge_files(settings, request, tenant)
    try:
        active = workers.active_queues() or workers.recently_seen()  # busy workers do not answer broadcasts
    except BrokerUnavailableError:
        log.warning("the broker does not answer", exc_info=True)  # names the Redis host: the log, not the client
        raise broker_unavailable() from None
    if not active:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="no worker is up (none announced itself recently); start one (make up)",
        )
    return job_queue(active, fallback=settings.FALLBACK_QUEUE)


@router.post("", response_model=ScoreResponse, responses=SCORE_RESPONSES)
async def score(
    request: ScoreRequest,
    http_request: Request,
    settings: SettingsDep,
    celery: CeleryDep,
    workers: WorkersDep,
    capacity: ScoreCapacityDep,
    tenant: TenantDep,
) -> ScoreResponse:
    """Probabilities (A, B, tie) for a few pairs, synchronously, through the same queues as jobs."""
    if len(request.pairs) > settings.SCORE_MAX_PAIRS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"{len(request.pairs)} pairs is more than SCORE_MAX_PAIRS={settings.SCORE_MAX_PAIRS};"
            " upload a dataset and submit a predict job instead",
        )
    try:
        with capacity.claim():
            queue = await run_in_threadpool(_score_queue, settings, request, workers, tenant)
            result = await score_pairs(
                celery, settings, request.model_dump(), queue=queue, client_gone=http_request.is_disconnected
            )
    except ScoreCapacityError:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{settings.SCORE_MAX_IN_FLIGHT} score requests are waiting already (SCORE_MAX_IN_FLIGHT);"
            " retry later, or submit a predict job",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        ) from None
    except CeleryTimeoutError:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            detail=f"no worker answered within SCORE_TIMEOUT_S={settings.SCORE_TIMEOUT_S}s (busy with a job, or"
            " loading its model); retry, or submit a predict job",
        ) from None
    except ClientGoneError:
        log.info("a score client disconnected before its result; its task was dropped")
        raise HTTPException(499, detail="the client disconnected") from None
    except BrokerUnavailableError:
        log.warning("the broker does not answer", exc_info=True)
        raise broker_unavailable() from None
    except HTTPException:
        raise
    except Exception as exc:
        log.warning("score task failed", exc_info=True)
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            detail=f"the worker failed ({type(exc).__name__}); retry, or submit a predict job and read its error",
        ) from None
    if "error" in result:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=result["error"])
    return ScoreResponse.model_validate(result)
