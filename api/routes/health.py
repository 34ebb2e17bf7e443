"""GET /healthz (liveness: the process answers) and GET /readyz (readiness: the stack can take work now).

The split is the Kubernetes/compose convention: a liveness probe that failed on a Redis outage would make the
orchestrator restart a gateway that is fine (and then every replica at once); readiness is what a load balancer
or `depends_on` waits for.
"""

import logging
import shutil
from collections import Counter

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SettingsDep, WorkersDep
from shared.names import CPU_QUEUE, GPU_QUEUE, gpu_index
from shared.schemas import Health, Liveness

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def consumes_a_job_queue(queues: list[str]) -> bool:
    """Whether a worker with these queues takes jobs: the shared cpu or gpu queue, or a pinned gpu.N."""
    return any(queue in (CPU_QUEUE, GPU_QUEUE) or gpu_index(queue) is not None for queue in queues)


@router.get("/healthz", response_model=Liveness)
async def read_liveness() -> Liveness:
    """The gateway process answers: 200, always, without asking Redis or the disk (use it to restart a hung
    gateway). Whether the stack can take work is GET /readyz."""
    return Liveness()


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def read_readiness(workers: WorkersDep, settings: SettingsDep):
    """Broker reachable, a live worker consuming a job queue, SHARED_DIR above MIN_FREE_BYTES: 200; otherwise 503
    with `reasons`, one line per problem, each naming what to fix.

    Open to anyone, so it says no more than that: workers by queue and count (no host names), the broker as
    ok/unreachable (its exception text names the Redis host; the gateway log has it), SHARED_DIR by name, never its
    path. Cheap enough to poll, and fast under any load: async (no request thread), from a view of the broker and
    workers reused for a second or two and never waited on for more than half a second (api/dispatch.py,
    WorkerDirectory.health).
    """
    view = await workers.health()
    reasons = []
    broker = view.broker
    if broker != "ok":
        log.warning("readiness: the broker is %s", broker)
        broker = "unreachable"
        reasons.append("redis unreachable: check that Redis runs and that REDIS_URL points at it")
    elif not any(consumes_a_job_queue(queues) for queues in view.workers.values()):
        reasons.append(f"no live worker consumes a job queue ({CPU_QUEUE}, {GPU_QUEUE}): start a worker")
    # statvfs, on the event loop: microseconds on a local disk; a hung network mount hangs every upload anyway.
    try:
        free_bytes: int | None = shutil.disk_usage(settings.SHARED_DIR).free
    except OSError as exc:
        log.warning("readiness: cannot read SHARED_DIR's free space: %s", exc)
        free_bytes = None
        reasons.append("SHARED_DIR cannot be read: check that the shared volume is mounted")
    if free_bytes is not None and free_bytes < settings.MIN_FREE_BYTES:
        reasons.append(
            f"SHARED_DIR has {free_bytes:,} bytes free, below MIN_FREE_BYTES ({settings.MIN_FREE_BYTES:,}): delete"
            " old jobs and datasets, or grow the volume"
        )
    queue_workers = Counter(queue for queues in view.workers.values() for queue in queues)
    body = Health(
        status="degraded" if reasons else "ok",
        broker=broker,
        workers=dict(sorted(queue_workers.items())),
        shared_free_bytes=free_bytes,
        reasons=reasons,
    )
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)
