"""The workers' Celery app: Redis broker and backend, declared queues gpu.0 … gpu.N and cpu.

Start one worker per GPU, pinned to it, on that GPU's queue (scripts/stack.sh and compose do this):

    CUDA_VISIBLE_DEVICES=0 celery -A workers.celery_app worker -Q gpu.0 -n gpu0@%h --pool=solo --concurrency=1 -E

and on a CPU-only machine one worker on `-Q cpu`. The configuration lives in shared/celery_config.py, which
the gateway's client shares.
"""

from __future__ import annotations

from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutdown

from shared.celery_config import make_celery
from shared.settings import get_settings

app = make_celery(get_settings(), include=("workers.tasks",))
_background = None


@worker_ready.connect
def start_background(sender, **_kwargs) -> None:
    """Announce this worker in Redis (and sweep, when elected) from a thread of its own; see workers/background.py."""
    global _background
    from workers.background import WorkerBackground
    from workers.sweeper import TaskMessage

    def send(message: TaskMessage) -> None:
        app.send_task(message.name, kwargs=message.kwargs, queue=message.queue, task_id=message.task_id)

    queues = sorted(sender.app.amqp.queues.consume_from)
    _background = WorkerBackground(get_settings(), worker=sender.hostname, queues=queues, send=send)
    _background.start()


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
    from workers.stacking.predictor import close_cached_judges

    close_cached_judges()
