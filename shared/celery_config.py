"""The one Celery configuration: the workers' app (workers/celery_app.py) and the gateway's client both build
theirs here, so queues, serialisation and Redis options cannot drift apart."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from shared.names import CPU_QUEUE, GPU_QUEUE
from shared.settings import Settings


def make_celery(settings: Settings, *, name: str = "arena", include: tuple[str, ...] = ()) -> Celery:
    """A Celery app on Redis (broker and result backend) with the declared queues gpu.0 … gpu.N, gpu and cpu.

    Args:
        settings: REDIS_URL, REDIS_KEY_PREFIX, GPU_QUEUE_COUNT, JOB_TIME_LIMIT_S and BROKER_* are read.
        name: the app's main name.
        include: task modules a worker imports (the gateway passes none).

    Returns:
        The configured app.
    """
    app = Celery(name, broker=settings.REDIS_URL, backend=settings.REDIS_URL, include=list(include))
    # acks_late: a message is only acknowledged after its task ran; Redis redelivers an unacknowledged one (its
    # worker died) after the visibility timeout, so that timeout must exceed the longest job (JOB_TIME_LIMIT_S,
    # enforced between chunks) or a running chunk is started twice. Idle workers sweep for such messages every
    # BROKER_RESTORE_INTERVAL_S (kombu's default sweep is every 100 s). The redelivered chunk's time limit counts
    # from its own start (workers/jobs/run.py, JobRun.start), so arriving hours late does not fail it.
    visibility_timeout = settings.BROKER_VISIBILITY_TIMEOUT_S or settings.JOB_TIME_LIMIT_S + 3600
    transport_options = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": settings.BROKER_RESTORE_INTERVAL_S,
        "unacked_restore_throttle": 1,
    }
    if settings.REDIS_KEY_PREFIX:
        transport_options["global_keyprefix"] = settings.REDIS_KEY_PREFIX
    queue_names = [*settings.gpu_queues, GPU_QUEUE, CPU_QUEUE]
    app.conf.update(
        task_queues=[Queue(queue_name, routing_key=queue_name) for queue_name in queue_names],
        task_default_queue=CPU_QUEUE,
        task_create_missing_queues=False,
        # No task_reject_on_worker_lost: it acts when a pool child dies, and --pool=solo has no children. A dead
        # solo worker never acknowledges its message, so Redis redelivers it after the visibility timeout.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        broker_transport_options=transport_options,
        result_backend_transport_options=dict(transport_options),
        broker_connection_retry_on_startup=True,
        enable_utc=True,
    )
    return app
