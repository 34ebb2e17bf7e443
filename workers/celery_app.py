"""The workers' Celery app: Redis broker and backend, declared queues gpu.0 … gpu.N, gpu and cpu.

Start one worker per GPU, pinned to it, on that GPU's queue and the shared gpu queue (scripts/stack.sh and compose
do this), on every host:

    CUDA_VISIBLE_DEVICES=0 celery -A workers.celery_app worker -Q gpu.0,gpu -n gpu0@%h --pool=solo --concurrency=1 -E

and on a CPU-only machine one or more workers on `-Q cpu`, each with a name of its own (-n cpu-2@%h). Predict
chunks wait on the shared queue and every free worker pulls the next one. The configuration lives in
shared/celery_config.py, which the gateway's client shares.
"""

from __future__ import annotations

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
)

from shared.celery_config import make_celery
from shared.log_format import (
    configure_root_logging,
    pop_log_fields,
    push_log_fields,
    set_process_log_fields,
    use_log_format,
)
from shared.settings import get_settings
from workers.common.hardware import prepare_process_environment

prepare_process_environment()  # before any task imports torch (OpenMP waits, the CUDA probe vLLM can fork after)
app = make_celery(get_settings(), include=("workers.tasks",))
_background = None
_identity = None
_task_log_fields: dict[str, object] = {}  # task id -> what its task_prerun pushed, popped by its task_postrun


@after_setup_logger.connect
@after_setup_task_logger.connect
def format_logs(logger, **_kwargs) -> None:
    """LOG_FORMAT=json: Celery's handlers (the root's and the task logger's) write JSON lines."""
    use_log_format(get_settings().LOG_FORMAT, (logger,))


@celeryd_init.connect
def check_start(sender, instance=None, options=None, **_kwargs) -> None:
    """Refuse to start under a name another live worker uses, or on a SHARED_DIR that is not the shared one."""
    global _identity
    import logging

    from workers.identity import WorkerStartError, check_worker_start

    set_process_log_fields(worker=str(sender))  # on every line, its heartbeat and sweeper threads' too
    if get_settings().LOG_FORMAT == "json":
        # What Celery says before its own logging starts (a warning when run as root) as JSON lines too; and no
        # start banner (many lines of text), as with `celery -q`.
        configure_root_logging("json")
        if instance is not None:
            instance.quiet = True
    queues = (options or {}).get("queues") or []
    queues = queues.split(",") if isinstance(queues, str) else list(queues)
    try:
        _identity, warning = check_worker_start(get_settings(), worker=str(sender), queues=queues)
    except WorkerStartError as exc:
        # SystemExit, not an exception: Celery logs and ignores what a signal handler raises.
        raise SystemExit(f"worker {sender} refused to start: {exc}") from None
    if warning:
        logging.getLogger(__name__).warning("worker %s: %s", sender, warning)


@worker_ready.connect
def start_background(sender, **_kwargs) -> None:
    """Announce this worker in Redis (and sweep, when elected) from a thread of its own; see workers/background.py."""
    global _background
    from workers.background import WorkerBackground
    from workers.sweeper import TaskMessage

    def send(message: TaskMessage) -> None:
        app.send_task(message.name, kwargs=message.kwargs, queue=message.queue, task_id=message.task_id)

    queues = sorted(sender.app.amqp.queues.consume_from)
    _background = WorkerBackground(get_settings(), worker=sender.hostname, queues=queues, send=send, identity=_identity)
    _background.start()
    from workers.common.metrics import serve

    serve(get_settings().WORKER_METRICS_PORT)


@task_prerun.connect
def mark_busy(task_id=None, kwargs=None, **_kwargs) -> None:
    if _background is not None:
        _background.task_started()
    # A job's task names its job and tenant on every line, Celery's own ("Task ... raised") included.
    if kwargs and "job_id" in kwargs:
        chunk = kwargs.get("chunk_index", kwargs.get("shard_index"))
        _task_log_fields[task_id] = push_log_fields(job_id=kwargs["job_id"], chunk=chunk, tenant=_tenant_of(kwargs))


def _tenant_of(kwargs: dict) -> str | None:
    from shared.job_store import JobStore

    try:
        return JobStore(get_settings().SHARED_DIR).read(str(kwargs["job_id"])).tenant
    except Exception:  # a deleted job or a malformed id: the task itself says so
        return None


@task_postrun.connect
def mark_idle(task_id=None, **_kwargs) -> None:
    if _background is not None:
        _background.task_finished()
    token = _task_log_fields.pop(task_id, None)
    if token is not None:
        pop_log_fields(token)


@worker_shutdown.connect
def close_judges(**_kwargs) -> None:
    if _background is not None:
        _background.stop()
    # vLLM runs its engine in a child process: close it so a stopped worker leaves nothing behind.
    from workers.predictor.predictor import close_cached_judges

    close_cached_judges()
