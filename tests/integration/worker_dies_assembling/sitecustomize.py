"""Loaded at interpreter start by a worker that a restart test starts with this folder on PYTHONPATH: the worker
runs a predict job's chunks and claims its assembly for real (claim_assembly, under its own process instance), then
kills itself with SIGKILL at the assembly's first step, before any file is written: what a kill -9 mid-assembly
leaves (the record `assembling` under a dead instance, the last chunk's message unacknowledged, nothing published)."""

import os
import signal

from celery.signals import worker_init


def _die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


@worker_init.connect
def _die_when_assembling(**_kwargs):
    # At worker_init, not at import: workers.celery_app must set the process up before anything imports torch.
    from workers.jobs import predict

    predict.assemble_predict_job = _die
