"""The workers' Celery app: Redis broker and backend, declared queues gpu.0 … gpu.N, gpu and cpu.

Start one worker per GPU, pinned to it, on that GPU's queue and the shared gpu queue (scripts/stack.sh and compose
do this), on every host:

    CUDA_VISIBLE_DEVICES=0 celery -A workers.celery_app worker -Q gpu.0,gpu -n gpu0@%h --pool=solo --concurrency=1 -E

and on a CPU-only machine one or more workers on `-Q cpu`, each with a name of its own (-n cpu-2@%h). Predict
chunks wait on the shared queue and every free worker pulls the next one. The configuration lives in
shared/celery_config.py, which the gateway's client shares.
"""

from __future__ import annotations

from celery.signals import celeryd_init, task_postrun, task_prerun, worker_ready, worker_shutdown

from shared.celery_config import make_celery
from shared.settings import get_settings
from workers.common.hardware import prepare_process_environment

prepare_process_environment()  # before any task imports torch (OpenMP waits, the CUDA probe vLLM can fork after)
app = make_celery(get_settings(), include=("workers.tasks",))
_background = None
_identity = None


@celeryd_init.connect
def check_start(sender, options=None, **_kwargs) -> None:
    """Refuse to start under a name another live worker uses, or on a SHARED_DIR that is not the shared one."""
    global _identity
    import logging

    from workers.identity import WorkerStartError, check_worker_start

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
def mark_busy(**_kwargs) -> None:
    if _background is not None:
        _background.task_started()


@task_postrun.connect
def mark_idle(**_kwargs) -> None:
    if _background is not None:
        _background.task_finished()


@worker_shutdown.connect
def close_judges(**_kwargs) -> None:
    if _background is not None:
        _background.stop()
    # vLLM runs its engine in a child process: close it so a stopped worker leaves nothing behind.
    from workers.predictor.predictor import close_cached_judges

    close_cached_judges()
