"""Job steps the Celery tasks run (no Celery in here): predict shards, their assembly and /v1/score (train and
synth have their own modules: train_job.py, synth_job.py).

A predict job's path: the gateway stores the dataset and the job record and sends one shard task per live
GPU queue (`arena.predict.shard`) in a chord whose callback is `arena.predict.assemble`. Each shard judges
its contiguous rows and publishes `submissions/<job_id>/shards/shard-NNN.npz`; the assembly concatenates
them in row order into `submissions/<job_id>/submission.csv` (+ metrics.json, votes.npz). Files are
published once and never replaced, so a repeated message or a retried step cannot change earlier outputs; the
three artefacts are all written (staged) before any is published, so a failed write publishes none of them.

Time limits are cooperative: a shard checks its attempt's deadline (its start + time_limit_s or JOB_TIME_LIMIT_S)
and whether the job was cancelled between chunks, and stops there without publishing anything.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.job_store import JobStore
from shared.settings import Settings
from shared.storage import (
    UnsafePathError,
    atomic_creator,
    dataset_csv_path,
    job_output_dir,
    resolve_judge_files,
)
from workers.pipelines.data_io import ArenaDataset, DataFormatError, Pair, clean_text, normalise_probabilities

log = logging.getLogger(__name__)

SUBMISSION_NAME = "submission.csv"
METRICS_NAME = "metrics.json"
VOTES_NAME = "votes.npz"


class JobCancelledError(RuntimeError):
    """The job was cancelled (or failed elsewhere) while this step ran; stop without publishing anything."""


class ArtifactWriteError(OSError):
    """A job's files could not be written to shared storage (full, read-only, permissions)."""


def user_errors() -> tuple[type[Exception], ...]:
    """Errors in what the job asked for: retrying cannot help, the job fails at once with the message."""
    from workers.pipelines.calibration import CalibrationError
    from workers.pipelines.engines import ModelNotFoundError

    return (DataFormatError, ModelNotFoundError, CalibrationError, UnsafePathError)


# --- the judge, loaded once per worker process ------------------------------------------------------------

_JUDGES: dict[tuple, object] = {}


def cached_judge(settings: Settings, *, model_path: Path, adapter_dir: Path | None):
    """The judge for (model, adapter, engine), loaded on first use and reused by every later task.

    Only one judge is kept: asking for another closes the previous one (a GPU holds one engine at a time).
    """
    from workers.pipelines.predict import Judge

    key = (str(model_path), str(adapter_dir) if adapter_dir else None, settings.JUDGE_ENGINE)
    if key not in _JUDGES:
        close_cached_judges()
        started = time.perf_counter()
        _JUDGES[key] = Judge.open(
            settings, model_path=str(model_path), adapter_dir=str(adapter_dir) if adapter_dir else None
        )
        log.info("judge %s loaded in %.1fs", key, time.perf_counter() - started)
    return _JUDGES[key]


def close_cached_judges() -> None:
    while _JUDGES:
        _, judge = _JUDGES.popitem()
        judge.close()


@dataclass
class JudgeRequest:
    model_path: Path
    adapter_dir: Path | None
    calibration_path: Path | None
    tta: bool

    @classmethod
    def from_params(cls, settings: Settings, params: dict) -> JudgeRequest:
        try:
            model_path, adapter_dir, calibration_path = resolve_judge_files(
                settings.SHARED_DIR,
                settings.judge_model_path,
                model=params.get("model"),
                adapter=params.get("adapter"),
                calibration=params.get("calibration"),
            )
        except FileNotFoundError as exc:
            from workers.pipelines.engines import ModelNotFoundError

            raise ModelNotFoundError(str(exc)) from None
        if calibration_path is None:
            # A classifier adapter from the train job carries its own calibrator: use it unless told otherwise.
            from workers.pipelines.classifier import adapter_calibration_path

            calibration_path = adapter_calibration_path(adapter_dir)
        return cls(model_path, adapter_dir, calibration_path, bool(params.get("tta", True)))

    def load_calibrator(self):
        """The calibrator, checked against the judge's order count before any judging is spent."""
        if self.calibration_path is None:
            return None
        from workers.pipelines.calibration import CalibrationError, Calibrator

        calibrator = Calibrator.load(self.calibration_path)
        if calibrator.n_orders != (2 if self.tta else 1):
            raise CalibrationError(
                f"{self.calibration_path.name} was fitted with {calibrator.n_orders} order(s) per pair; set"
                f" tta={'true' if calibrator.n_orders == 2 else 'false'} or refit the calibration"
            )
        return calibrator


# --- predict ------------------------------------------------------------------------------------------------


def shard_path(shared_dir: Path, job_id: str, shard_index: int) -> Path:
    return job_output_dir(shared_dir, job_id) / "shards" / f"shard-{shard_index:03d}.npz"


def dataset_rows(dataset: ArenaDataset, start: int, stop: int) -> ArenaDataset:
    return ArenaDataset(
        pairs=dataset.pairs[start:stop],
        labels=None if dataset.labels is None else dataset.labels[start:stop],
        sources=None if dataset.sources is None else dataset.sources[start:stop],
    )


def load_job_dataset(settings: Settings, dataset_id: str) -> ArenaDataset:
    from workers.pipelines.data_io import read_arena_csv

    path = dataset_csv_path(settings.SHARED_DIR, dataset_id)
    if not path.is_file():
        # Not a user error: on shared storage a file can be briefly invisible, so this is worth a retry. The
        # message names the file relative to SHARED_DIR: job records are shown to users, host paths are not.
        raise FileNotFoundError(
            f"dataset file datasets/{dataset_id}/{path.name} is missing from shared storage; upload the dataset again"
        )
    return read_arena_csv(path)


def run_predict_shard(settings: Settings, *, job_id: str, shard_index: int, worker: str | None, attempt: int) -> dict:
    """Judge one shard's rows and publish its probabilities; returns a small summary for the chord.

    Args:
        settings: worker settings.
        job_id: the job.
        shard_index: which shard of the job record.
        worker: this worker's name, recorded for the user.
        attempt: 0 for the first try, then the retry count (the record's `attempts` counts every start,
            redeliveries after a worker died included).

    Raises:
        JobCancelledError: the job was cancelled or failed while this shard ran.
    """
    store = JobStore(settings.SHARED_DIR)
    record = store.read(job_id)
    if record.terminal:
        raise JobCancelledError(f"job {job_id} is already {record.state}")
    shard = next(shard for shard in record.shards if shard.index == shard_index)
    output_path = shard_path(settings.SHARED_DIR, job_id, shard_index)
    if output_path.exists():  # a redelivered message: the shard was published already
        store.update_shard(job_id, shard_index, state="succeeded", done=shard.stop - shard.start)
        return {"shard": shard_index, "rows": shard.stop - shard.start, "repeated": True}
    # attempts counts every start, retries and redeliveries (a worker that died mid-shard) alike.
    record = store.update_shard(
        job_id, shard_index, state="running", worker=worker, attempts=shard.attempts + 1, error=None
    )
    time_limit_s = job_time_limit_s(settings, record.params)
    # Per attempt, not from the job's first started_at: a shard redelivered after its worker died (hours later,
    # past the visibility timeout) would otherwise arrive past its deadline and fail the job on the spot.
    deadline = time.time() + time_limit_s

    def check_still_wanted() -> None:
        """Stop between chunks when the job was cancelled or failed elsewhere, or ran past its time limit."""
        current = store.read(job_id)
        if current.terminal:
            raise JobCancelledError(f"job {job_id} was {current.state} while shard {shard_index} ran")
        if time.time() > deadline:
            reason = (
                f"the job ran longer than its time limit of {time_limit_s}s and was stopped (shard {shard_index}"
                f" after {current.progress.done} of {current.progress.total} rows); raise time_limit_s (at most"
                " JOB_TIME_LIMIT_S) or split the dataset"
            )
            fail_shard_and_job(store, job_id, shard_index, reason)
            raise JobCancelledError(reason)

    from workers.pipelines.predict import predict_dataset

    request = JudgeRequest.from_params(settings, record.params)
    calibrator = request.load_calibrator()
    rows = dataset_rows(load_job_dataset(settings, record.params["dataset"]), shard.start, shard.stop)
    judge = cached_judge(settings, model_path=request.model_path, adapter_dir=request.adapter_dir)
    check_still_wanted()  # loading the judge can take minutes on a cold worker

    def on_progress(done: int, _total: int) -> None:
        store.update_shard(job_id, shard_index, done=done)
        check_still_wanted()

    prediction = predict_dataset(rows, judge, calibrator=calibrator, tta=request.tta, on_progress=on_progress)
    result = prediction.judge_result
    try:
        with atomic_creator(output_path, "wb") as handle:
            np.savez(
                handle,
                ids=np.array(rows.ids),
                probabilities=prediction.probabilities,
                vote_logprobs=result.vote_logprobs,
                truncated=result.truncated,
            )
    except FileExistsError:
        log.warning("shard %s of job %s was published by another delivery; keeping that one", shard_index, job_id)
    summary = {"shard": shard_index, "rows": len(rows), **prediction.summary(), "judge": judge.description}
    store.update_shard(job_id, shard_index, state="succeeded", done=len(rows))
    return summary


def job_time_limit_s(settings: Settings, params: dict) -> int:
    """The job's own time limit when it asked for one, never more than the server's JOB_TIME_LIMIT_S."""
    return min(params.get("time_limit_s") or settings.JOB_TIME_LIMIT_S, settings.JOB_TIME_LIMIT_S)


def fail_shard_and_job(store: JobStore, job_id: str, shard_index: int, reason: str) -> None:
    def change(record) -> None:
        shard = next(shard for shard in record.shards if shard.index == shard_index)
        shard.state, shard.error = "failed", reason
        record.state, record.error = "failed", reason

    store.update(job_id, change)


def assemble_predict_job(settings: Settings, *, job_id: str, shard_summaries: list[dict]) -> dict:
    """Merge the shards, in row order, into submission.csv (+ metrics.json, votes.npz) and finish the job.

    Raises:
        ArtifactWriteError: the files could not be written (disk full, read-only); the job is failed with the
            reason and none of its files is published.
    """
    from workers.pipelines.data_io import write_submission

    store = JobStore(settings.SHARED_DIR)
    record = store.read(job_id)
    if record.terminal:
        return {"job_id": job_id, "state": record.state}
    dataset = load_job_dataset(settings, record.params["dataset"])
    parts = []
    for shard in sorted(record.shards, key=lambda shard: shard.index):
        with np.load(shard_path(settings.SHARED_DIR, job_id, shard.index)) as stored:
            parts.append({name: stored[name] for name in ("ids", "probabilities", "vote_logprobs", "truncated")})
    ids = [str(row_id) for part in parts for row_id in part["ids"]]
    if ids != dataset.ids:
        raise RuntimeError(f"job {job_id}: the shards cover {len(ids)} rows that do not match the dataset's order")
    probabilities = np.concatenate([part["probabilities"] for part in parts])
    output_dir = job_output_dir(settings.SHARED_DIR, job_id)
    votes = {
        "ids": np.array(ids),
        "vote_logprobs": np.concatenate([part["vote_logprobs"] for part in parts]),
        "truncated": np.concatenate([part["truncated"] for part in parts]),
    }
    metrics = {
        # Relative to SHARED_DIR: records and results are shown to users, host paths are not.
        "submission_path": str(output_dir.relative_to(settings.SHARED_DIR) / SUBMISSION_NAME),
        "rows": len(ids),
        "truncated_rows": int(votes["truncated"].sum()),
        "shards": sorted(shard_summaries or [], key=lambda summary: summary.get("shard", 0)),
    }
    if dataset.labels is not None:
        from workers.pipelines.evaluate import score_predictions

        scored = score_predictions(dataset.labels, normalise_probabilities(probabilities, floor=settings.PROB_FLOOR))
        metrics.update({key: scored[key] for key in ("log_loss", "accuracy") if key in scored})
    writers = {
        SUBMISSION_NAME: lambda path: write_submission(path, ids, probabilities, floor=settings.PROB_FLOOR),
        VOTES_NAME: lambda path: _save_npz(path, **votes),
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
    store.succeed(job_id, artifacts=list(writers), result=metrics)
    return {"job_id": job_id, "state": "succeeded", "rows": len(ids)}


def publish_together(output_dir: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Write every file to a staged name, then publish them all; on any error none of them is left visible.

    A file that exists already (an earlier or concurrent delivery of the same step) is kept, never replaced.
    """
    if all((output_dir / name).exists() for name in writers):
        log.warning("the files of %s exist already; keeping them", output_dir.name)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    published: list[Path] = []
    try:
        for name, write in writers.items():
            staged[name] = output_dir / f".{name}.{uuid.uuid4().hex}.staged"
            write(staged[name])
        for name, path in staged.items():
            try:
                os.link(path, output_dir / name)  # atomic, and unlike a rename it fails when the file exists
                published.append(output_dir / name)
            except FileExistsError:
                log.warning("%s/%s was written concurrently; keeping that one", output_dir.name, name)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, so numpy does not append .npz to the staged name
        np.savez_compressed(handle, **arrays)


# --- score --------------------------------------------------------------------------------------------------


def _turns(value: str | list[str]) -> tuple[str, ...]:
    return tuple(clean_text(turn) for turn in ([value] if isinstance(value, str) else value))


def run_score(settings: Settings, payload: dict) -> dict:
    """Probabilities for a few pairs given inline (POST /v1/score)."""
    from workers.pipelines.predict import predict_dataset

    started = time.perf_counter()
    request = JudgeRequest.from_params(settings, payload)
    calibrator = request.load_calibrator()
    pairs = [
        Pair(
            id=str(pair.get("id") or index),
            prompt=_turns(pair["prompt"]),
            response_a=_turns(pair["response_a"]),
            response_b=_turns(pair["response_b"]),
        )
        for index, pair in enumerate(payload["pairs"])
    ]
    judge = cached_judge(settings, model_path=request.model_path, adapter_dir=request.adapter_dir)
    prediction = predict_dataset(ArenaDataset(pairs=pairs), judge, calibrator=calibrator, tta=request.tta)
    probabilities = normalise_probabilities(prediction.probabilities, floor=settings.PROB_FLOOR)
    return {
        "probabilities": [
            {"id": pair.id, "winner_model_a": row[0], "winner_model_b": row[1], "winner_tie": row[2]}
            for pair, row in zip(pairs, probabilities.tolist(), strict=True)
        ],
        "seconds": round(time.perf_counter() - started, 3),
        "judge": judge.description,
    }
