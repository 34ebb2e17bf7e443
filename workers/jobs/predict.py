"""The predict job's two steps (no Celery in here): judge a shard of rows, then assemble the submission.

A predict job's path: the gateway stores the dataset and the job record and sends one shard task per live
GPU queue (`arena.predict.shard`). Each shard judges its contiguous rows, publishes
`submissions/<job_id>/shards/shard-NNN.npz` and marks itself succeeded in the job record; the worker whose shard
completes the set claims the assembly under the record's lock (`claim_assembly`: no Celery chord, whose counter
lives in Redis and counts deliveries, not shards) and concatenates the shards in row order into
`submissions/<job_id>/submission.csv` (+ metrics.json, votes.npz). Files are
published once and never replaced, so a repeated message or a retried step cannot change earlier outputs; the
three artefacts are all written (staged) before any is published, so a failed write publishes none of them.

Time limits are cooperative: a shard checks its attempt's deadline (its start + time_limit_s or JOB_TIME_LIMIT_S)
and whether the job was cancelled between chunks, and stops there without publishing anything. A shard keeps
every SHARD_CHECKPOINT_ROWS judged rows in `shards/shard-NNN.parts/`; an attempt after a killed worker reads
those back and judges only the rest.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from shared.arena_csv import ArenaDataset, normalise_probabilities, read_arena_csv, write_submission
from shared.artifacts import METRICS_NAME, SUBMISSION_NAME, VOTES_NAME
from shared.job_store import JobStore
from shared.settings import Settings
from shared.storage import atomic_creator, dataset_csv_path, job_output_dir, redact_host_paths
from workers.jobs.run import ArtifactWriteError, JobRun, publish_together
from workers.judge.votes import concatenate_results, load_votes, save_votes, write_votes
from workers.stacking.predictor import Prediction, Predictor, PredictRequest

log = logging.getLogger(__name__)


def shard_path(shared_dir: Path, job_id: str, shard_index: int) -> Path:
    return job_output_dir(shared_dir, job_id) / "shards" / f"shard-{shard_index:03d}.npz"


def dataset_rows(dataset: ArenaDataset, start: int, stop: int) -> ArenaDataset:
    return ArenaDataset(
        pairs=dataset.pairs[start:stop],
        labels=None if dataset.labels is None else dataset.labels[start:stop],
        sources=None if dataset.sources is None else dataset.sources[start:stop],
    )


def load_job_dataset(settings: Settings, dataset_id: str) -> ArenaDataset:
    path = dataset_csv_path(settings.SHARED_DIR, dataset_id)
    if not path.is_file():
        # Not a user error: on shared storage a file can be briefly invisible, so this is worth a retry. The
        # message names the file relative to SHARED_DIR: job records are shown to users, host paths are not.
        raise FileNotFoundError(
            f"dataset file datasets/{dataset_id}/{path.name} is missing from shared storage; upload the dataset again"
        )
    return read_arena_csv(path)


def run_predict_shard(
    settings: Settings, *, job_id: str, shard_index: int, worker: str | None, task_id: str | None = None
) -> dict:
    """Judge one shard's rows and publish its probabilities; returns a small summary of the shard.

    Args:
        settings: worker settings.
        job_id: the job.
        shard_index: which shard of the job record.
        worker: this worker's name, recorded for the user and the sweeper.
        task_id: this delivery's task id; a delivery that is not the shard's current attempt stops at once.

    Raises:
        JobCancelledError: the job was cancelled or failed while this shard ran.
        StaleDeliveryError: another delivery owns the shard (re-queued by the sweeper, or sent twice).
    """
    deadline_hint = "raise time_limit_s (at most JOB_TIME_LIMIT_S) or split the dataset"
    with JobRun(
        settings, job_id, unit="rows", shard_index=shard_index, deadline_hint=deadline_hint, task_id=task_id,
        worker=worker,
    ) as run:  # fmt: skip
        shard = run.shard
        output_path = shard_path(settings.SHARED_DIR, job_id, shard_index)
        if output_path.exists():  # a redelivered message: the shard was published already
            run.store.update_shard(job_id, shard_index, state="succeeded", done=shard.stop - shard.start)
            return {"shard": shard_index, "rows": shard.stop - shard.start, "repeated": True}
        run.start()  # counts the attempt (retries and redeliveries alike) and takes the lease
        request = PredictRequest.from_params(settings, run.params)
        rows = dataset_rows(load_job_dataset(settings, run.params["dataset"]), shard.start, shard.stop)
        predictor = Predictor.cached(settings, request)
        run.check()  # loading the judge can take minutes on a cold worker
        parts_dir = output_path.with_suffix(".parts")
        prediction, resumed_rows = _predict_in_checkpoints(settings, rows, predictor, parts_dir, report=run.report)
        _publish_shard(output_path, prediction, job_id=job_id, shard_index=shard_index)
        shutil.rmtree(parts_dir, ignore_errors=True)  # the shard file holds every row now
        summary = {
            "shard": shard_index, "rows": len(rows), **prediction.summary(), "judge": predictor.description,
            "resumed_rows": resumed_rows,
        }  # fmt: skip
        run.store.update_shard(job_id, shard_index, state="succeeded", done=len(rows), summary=summary)
        return summary


def checkpoint_rows(settings: Settings) -> int:
    """Rows per checkpoint: SHARD_CHECKPOINT_ROWS rounded up to whole engine chunks, so that a resumed shard sends
    the engine the same batches as an undisturbed one (batch padding can move the last digits)."""
    chunk = settings.JUDGE_CHUNK_PAIRS
    return max(chunk, -(-settings.SHARD_CHECKPOINT_ROWS // chunk) * chunk)


def _predict_in_checkpoints(
    settings: Settings, rows: ArenaDataset, predictor: Predictor, parts_dir: Path, *, report
) -> tuple[Prediction, int]:
    """Predict `rows` block by block, keeping each block in `parts_dir`; blocks found there (an earlier attempt of
    this shard, stopped by a killed worker) are read back instead of judged again. Returns the prediction and how
    many rows were read back."""
    block = checkpoint_rows(settings)
    total = len(rows.pairs)
    results, probabilities, resumed = [], [], 0
    for start in range(0, total, block):
        stop = min(start + block, total)
        part_path = parts_dir / f"rows-{start:09d}.npz"
        if part_path.exists():
            results.append(load_votes(part_path))
            probabilities.append(_stored_probabilities(part_path))
            resumed += stop - start
        else:

            def report_block(done: int, _total: int, *, offset: int = start) -> None:
                report(offset + done, total)

            part = predictor.predict(dataset_rows(rows, start, stop), on_progress=report_block)
            try:
                with atomic_creator(part_path, "wb") as handle:
                    write_votes(handle, part.judge_result, probabilities=part.probabilities)
            except FileExistsError:
                pass  # written by a concurrent delivery of this shard: the same rows, either one will do
            results.append(part.judge_result)
            probabilities.append(part.probabilities)
        report(stop, total)
    prediction = Prediction(
        probabilities=np.concatenate(probabilities) if probabilities else np.zeros((0, 3)),
        judge_result=concatenate_results(results),
        calibrated=predictor.calibrated,
    )
    return prediction, resumed


def claim_assembly(store: JobStore, job_id: str, *, worker: str) -> bool:
    """Whether `worker` should assemble the job now: true for exactly one caller, once every shard succeeded.

    Completion is the set of shard records in state succeeded, read and claimed under the record's lock, so a
    repeated delivery of a shard counts once and the last shard to finish, whichever worker ran it, assembles.
    """
    claimed = False

    def change(record) -> None:
        nonlocal claimed
        if record.assembler is None and all(shard.state == "succeeded" for shard in record.shards):
            record.assembler = worker
            record.state = "assembling"
            claimed = True

    store.update(job_id, change)
    return claimed


def _publish_shard(output_path: Path, prediction, *, job_id: str, shard_index: int) -> None:
    """The shard's votes and probabilities, published once (a second delivery keeps the first one's file)."""
    try:
        with atomic_creator(output_path, "wb") as handle:
            write_votes(handle, prediction.judge_result, probabilities=prediction.probabilities)
    except FileExistsError:
        log.warning("shard %s of job %s was published by another delivery; keeping that one", shard_index, job_id)


def assemble_predict_job(settings: Settings, *, job_id: str) -> dict:
    """Merge the shards, in row order, into submission.csv (+ metrics.json, votes.npz) and finish the job.

    Raises:
        ArtifactWriteError: the files could not be written (disk full, read-only); the job is failed with the
            reason and none of its files is published.
    """
    store = JobStore(settings.SHARED_DIR)
    record = store.read(job_id)
    if record.terminal:
        return {"job_id": job_id, "state": record.state}
    dataset = load_job_dataset(settings, record.params["dataset"])
    paths = [shard_path(settings.SHARED_DIR, job_id, shard.index) for shard in sorted(record.shards, key=_index)]
    votes = concatenate_results([load_votes(path) for path in paths])
    ids = votes.ids
    if ids != dataset.ids:
        raise RuntimeError(f"job {job_id}: the shards cover {len(ids)} rows that do not match the dataset's order")
    probabilities = np.concatenate([_stored_probabilities(path) for path in paths])
    output_dir = job_output_dir(settings.SHARED_DIR, job_id)
    metrics = {
        # Relative to SHARED_DIR: records and results are shown to users, host paths are not.
        "submission_path": str(output_dir.relative_to(settings.SHARED_DIR) / SUBMISSION_NAME),
        "rows": len(ids),
        "truncated_rows": int(votes.truncated.sum()),
        "shards": sorted(
            [shard.summary for shard in record.shards if shard.summary], key=lambda summary: summary.get("shard", 0)
        ),
    }
    if dataset.labels is not None:
        from workers.stacking.evaluate import score_predictions

        scored = score_predictions(dataset.labels, normalise_probabilities(probabilities, floor=settings.PROB_FLOOR))
        metrics.update({key: scored[key] for key in ("log_loss", "accuracy") if key in scored})
    metrics = redact_host_paths(metrics, settings.SHARED_DIR)  # an artefact and the job's result: shown to users
    writers = {
        SUBMISSION_NAME: lambda path: write_submission(path, ids, probabilities, floor=settings.PROB_FLOOR),
        VOTES_NAME: lambda path: save_votes(path, votes),
        METRICS_NAME: lambda path: path.write_text(json.dumps(metrics, indent=1, default=str)),
    }
    try:
        publish_together(output_dir, writers)
    except OSError as exc:
        reason = (
            f"could not write the job's files into submissions/{job_id}/ ({exc.strerror or exc}); nothing was"
            " published. Free space or fix the permissions of SHARED_DIR, then submit the job again"
        )
        store.fail(job_id, reason)
        raise ArtifactWriteError(reason) from None
    finished = store.succeed(job_id, artifacts=list(writers), result=metrics)
    if finished.state != "succeeded":
        # Cancelled (or failed) while the files were written: a finished job other than succeeded has no files.
        for name in writers:
            (output_dir / name).unlink(missing_ok=True)
        return {"job_id": job_id, "state": finished.state}
    return {"job_id": job_id, "state": "succeeded", "rows": len(ids)}


def _index(shard) -> int:
    return shard.index


def _stored_probabilities(path: Path) -> np.ndarray:
    with np.load(path) as stored:
        return stored["probabilities"]
