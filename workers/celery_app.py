"""The workers' Celery app: Redis broker and backend, declared queues gpu.0 … gpu.N and cpu.

Start one worker per GPU, pinned to it, on that GPU's queue (scripts/stack.sh and compose do this):

    CUDA_VISIBLE_DEVICES=0 celery -A workers.celery_app worker -Q gpu.0 -n gpu0@%h --pool=solo --concurrency=1 -E

and on a CPU-only machine one worker on `-Q cpu`. The configuration lives in shared/celery_config.py, which
the gateway's client shares.
"""

from __future__ import annotations

from celery.signals import worker_shutdown

from shared.celery_config import make_celery
from shared.settings import get_settings

app = make_celery(get_settings(), include=("workers.tasks",))


@worker_shutdown.connect
def close_judges(**_kwargs) -> None:
    # vLLM runs its engine in a child process: close it so a stopped worker leaves nothing behind.
    from workers.judge.request import close_cached_judges

    close_cached_judges()
