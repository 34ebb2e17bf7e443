"""Celery tasks: thin views over workers/jobs/ (parse the message, call the job step, report).

Names come from shared/names.py; the gateway sends these tasks by name and never imports this module.
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Callable

from shared.errors import UserError
from shared.job_store import JobNotFoundError, JobStore
from shared.names import (
    LEADERBOARD_TASK,
    LEGACY_PREDICT_SHARD_TASK,
    PREDICT_ASSEMBLE_TASK,
    PREDICT_CHUNK_TASK,
    SCORE_TASK,
    SYNTH_TASK,
    TRAIN_TASK,
)
from shared.schemas import ID_PATTERN, utc_now
from shared.settings import get_settings
from shared.storage import redact_host_paths
from workers.celery_app import app
from workers.common.metrics import CHUNKS, ROWS, ROWS_PER_SECOND
from workers.jobs import predict
from workers.jobs import score as score_step
from workers.jobs.run import JobCancelledError, StaleDeliveryError

log = logging.getLogger(__name__)


class RejectedMessageError(ValueError):
    """A task message whose ids break the gateway's rules: never turned into a path, never retried."""


def checked_job_id(job_id: object, *, task: str) -> str:
    """The message's job id, checked with the gateway's rule (ID_PATTERN: 32 hex digits), before any path is made
    from it: a message from anywhere else (a Redis others can write to) must not reach outside SHARED_DIR."""
    if not isinstance(job_id, str) or not re.fullmatch(ID_PATTERN.strip("^$"), job_id):
        log.error("%s: rejected a task message with a malformed job_id %r", task, str(job_id)[:80])
        raise RejectedMessageError(f"{task}: job_id must be 32 hex digits; the message was rejected")
    return job_id


def checked_chunk_index(chunk_index: object, *, task: str) -> int:
    if not isinstance(chunk_index, int) or isinstance(chunk_index, bool) or not 0 <= chunk_index < 10_000_000:
        log.error("%s: rejected a task message with a malformed chunk_index %r", task, str(chunk_index)[:80])
        raise RejectedMessageError(
            f"{task}: chunk_index must be a small non-negative integer; the message was rejected"
        )
    return chunk_index


@app.task(name=PREDICT_CHUNK_TASK, bind=True, max_retries=None)
def predict_chunk(self, *, job_id: str, chunk_index: int) -> dict:
    """Judge one chunk of a predict job; retried on unexpected errors, failing the job once retries run out."""
    return _judge_chunk(self, job_id=job_id, chunk_index=chunk_index)


@app.task(name=LEGACY_PREDICT_SHARD_TASK, bind=True, max_retries=None)
def predict_shard(self, *, job_id: str, shard_index: int) -> dict:
    """A message queued by the release before chunks (one shard per queue): its record lists the same unit."""
    return _judge_chunk(self, job_id=job_id, chunk_index=shard_index)


def _judge_chunk(self, *, job_id: str, chunk_index: int) -> dict:
    job_id = checked_job_id(job_id, task=PREDICT_CHUNK_TASK)
    chunk_index = checked_chunk_index(chunk_index, task=PREDICT_CHUNK_TASK)
    settings = get_settings()
    store = JobStore(settings.SHARED_DIR)
    attempt = self.request.retries
    try:
        summary = predict.run_predict_chunk(
            settings, job_id=job_id, chunk_index=chunk_index, worker=self.request.hostname, task_id=self.request.id
        )
    except StaleDeliveryError as exc:  # another attempt owns the chunk: leave its record alone
        log.info("%s", exc)
        return {"chunk": chunk_index, "stale": str(exc)}
    except JobCancelledError as exc:
        try:
            store.update_chunk(job_id, chunk_index, if_task_id=self.request.id, state="cancelled")
        except JobNotFoundError:
            pass  # deleted meanwhile (DELETE /v1/jobs/{id}): nothing left to mark
        return {"chunk": chunk_index, "cancelled": str(exc)}
    except JobNotFoundError:  # the job was deleted (DELETE, retention): stop, never retry
        log.info("job %s chunk %s: the job was deleted; stopping", job_id, chunk_index)
        return {"chunk": chunk_index, "deleted": True}
    except UserError as exc:
        store.fail(job_id, f"chunk {chunk_index}: {exc}", chunk=(chunk_index, self.request.id))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            # Its files are written atomically (temp file, then rename), so nothing half-written is left: the chunk
            # is retried like any other failure, later, once space was freed.
            reason = "the shared storage is full (ENOSPC); free space (DELETE old jobs and datasets) and retry"
        if attempt < settings.CHUNK_MAX_RETRIES:
            log.warning("job %s chunk %s attempt %s failed (%s); retrying", job_id, chunk_index, attempt + 1, reason)
            store.update_chunk(
                job_id, chunk_index, if_task_id=self.request.id, state="queued", error=reason, sent_at=utc_now()
            )  # sent again by the retry below, under the same id
            raise self.retry(exc=exc, countdown=settings.CHUNK_RETRY_DELAY_S) from None
        reason = f"chunk {chunk_index} failed after {attempt + 1} attempts: {reason}"
        CHUNKS.labels("failed").inc()
        store.fail(job_id, reason, chunk=(chunk_index, self.request.id))
        raise
    if "seconds" in summary:  # judged now (not a repeated delivery of a chunk already done)
        CHUNKS.labels("succeeded").inc()
        ROWS.inc(summary["rows"])
        ROWS_PER_SECOND.set(summary["rows"] / max(summary["seconds"], 1e-6))
    # The chunk that completes the set assembles the submission, on this worker, once.
    if predict.claim_assembly(store, job_id, worker=self.request.hostname or "worker"):
        return {**summary, "assembled": _assemble(settings, job_id=job_id)}
    return summary


def _assemble(settings, *, job_id: str) -> dict:
    try:
        return predict.assemble_predict_job(settings, job_id=job_id)
    except Exception as exc:
        JobStore(settings.SHARED_DIR).fail(job_id, f"assembling the submission failed: {type(exc).__name__}: {exc}")
        raise


@app.task(name=PREDICT_ASSEMBLE_TASK, bind=True)
def predict_assemble(self, chunk_summaries: list | None = None, *, job_id: str) -> dict:
    """Assemble a job whose chunks all succeeded but whose assembly never ran or died (the sweeper sends this);
    also the chord callback that gateways sent before assembly moved into the last chunk. Such a message still
    carries the chunks' results as its first argument: accepted and ignored, the job record holds the same."""
    job_id = checked_job_id(job_id, task=PREDICT_ASSEMBLE_TASK)
    settings = get_settings()
    if not predict.claim_assembly(JobStore(settings.SHARED_DIR), job_id, worker=self.request.hostname or "worker"):
        return {"job_id": job_id, "assembled_elsewhere": True}
    return _assemble(settings, job_id=job_id)


@app.task(name=SCORE_TASK, bind=True)
def score(self, payload: dict) -> dict:
    """Score a few inline pairs; errors in the request come back as {"error": ...} for the gateway's 4xx.

    A request past its deadline (the gateway gave up) comes back as {"expired": ...} without judging; a message
    past its `expires` never gets here (the worker drops it as revoked).
    """
    settings = get_settings()
    try:
        result = score_step.run_score(settings, payload, task_id=self.request.id)
        if "expired" in result:
            log.info("score task %s: %s", self.request.id, result["error"])
        return result
    except UserError as exc:
        return {"error": redact_host_paths(str(exc), settings.SHARED_DIR)}  # the gateway shows it to the client


@app.task(name=TRAIN_TASK, bind=True)
def train(self, *, job_id: str) -> dict:
    """Train a LoRA judge into adapters/<name>/; a redelivered message resumes from the last checkpoint."""
    from workers.jobs.train import run_train_job

    return _run_whole_job(self, run_train_job, job_id=job_id, what="training")


@app.task(name=SYNTH_TASK, bind=True)
def synth(self, *, job_id: str) -> dict:
    """Label a dataset with the teacher into synth/<job_id>/; a redelivered message skips the finished chunks."""
    from workers.jobs.synth import run_synth_job

    return _run_whole_job(self, run_synth_job, job_id=job_id, what="synth")


@app.task(name=LEADERBOARD_TASK, bind=True)
def leaderboard(self, *, job_id: str) -> dict:
    """Rank a labelled dataset's models into submissions/<job_id>/leaderboard.*; a redelivered message redoes it."""
    from workers.jobs.leaderboard import run_leaderboard_job

    return _run_whole_job(self, run_leaderboard_job, job_id=job_id, what="the leaderboard")


def _run_whole_job(task, step: Callable[..., dict], *, job_id: str, what: str) -> dict:
    """A one-task job (train, synth, leaderboard): no retry; any error fails the job with its message, then
    re-raises."""
    job_id = checked_job_id(job_id, task=task.name)
    settings = get_settings()
    store = JobStore(settings.SHARED_DIR)
    try:
        return step(settings, job_id=job_id, task_id=task.request.id, worker=task.request.hostname)
    except StaleDeliveryError as exc:
        log.info("%s", exc)
        return {"job_id": job_id, "stale": str(exc)}
    except JobCancelledError as exc:
        return {"job_id": job_id, "cancelled": str(exc)}
    except JobNotFoundError:  # the job was deleted (DELETE, retention): stop, never retry
        log.info("job %s was deleted; stopping", job_id)
        return {"job_id": job_id, "deleted": True}
    except UserError as exc:
        store.fail(job_id, str(exc), task_id=task.request.id)
        raise
    except Exception as exc:
        store.fail(job_id, f"{what} failed: {type(exc).__name__}: {exc}", task_id=task.request.id)
        raise
