"""The predict job's two steps (no Celery in here): judge a chunk of rows, then assemble the submission.

A predict job's path: the gateway stores the dataset and the job record, cuts the rows into chunks of
PREDICT_CHUNK_ROWS and sends one task per chunk (`arena.predict.chunk`) to its device class's shared queue (gpu,
else cpu). Every worker consuming that queue, on any host, pulls the next chunk when it is free (prefetch 1, acks
late), so fast workers take more chunks and a worker started mid-job joins in. Each chunk judges its contiguous
rows, publishes `submissions/<job_id>/chunks/chunk-NNN.npz` and marks itself succeeded in the job record; the worker
whose chunk completes the set claims the assembly under the record's lock (`claim_assembly`: no Celery chord,
whose counter lives in Redis and counts deliveries, not chunks) and concatenates the chunks in row order into
`submissions/<job_id>/submission.csv` (+ metrics.json, votes.npz). Files are published once and never replaced,
so a repeated message or a retried step cannot change earlier outputs; the three artefacts are all written
(staged) before any is published, so a failed write publishes none of them.

Time limits are cooperative: a chunk checks its attempt's deadline (its start + time_limit_s or JOB_TIME_LIMIT_S)
and whether the job was cancelled between batches, and stops there without publishing anything. A chunk is the
unit of resuming: one whose worker died is judged again from its start (the sweeper re-queues it), the published
ones are kept.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.arena_csv import ArenaDataset, normalise_probabilities, read_arena_csv, short, write_submission
from shared.artifacts import METRICS_NAME, RELIABILITY_NAME, SUBMISSION_NAME, VOTES_NAME
from shared.job_store import JobStore
from shared.schemas import utc_now
from shared.settings import Settings
from shared.storage import atomic_creator, dataset_csv_path, job_output_dir, redact_host_paths
from workers.common.hardware import CUDA_PEAK_KEY, cuda_peak_memory
from workers.identity import process_instance
from workers.jobs.run import ArtifactWriteError, JobCancelledError, JobRun, publish_together
from workers.judge.votes import JudgeResult, concatenate_results, load_votes, save_votes, write_votes
from workers.predictor.predictor import Predictor, PredictRequest

log = logging.getLogger(__name__)


def chunk_path(shared_dir: Path, job_id: str, chunk_index: int) -> Path:
    return job_output_dir(shared_dir, job_id) / "chunks" / f"chunk-{chunk_index:04d}.npz"


def dataset_rows(dataset: ArenaDataset, start: int, stop: int) -> ArenaDataset:
    return ArenaDataset(
        pairs=dataset.pairs[start:stop],
        labels=None if dataset.labels is None else dataset.labels[start:stop],
        sources=None if dataset.sources is None else dataset.sources[start:stop],
    )


class _LastDataset:
    """The last dataset this worker parsed: a job's chunks come one after another, and parsing a large CSV for each
    would cost more than judging a small chunk. Datasets are published once and never change, so the id is the key
    (with the file's size and time, in case one was deleted and uploaded again under the same id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._dataset: ArenaDataset | None = None

    def read(self, path: Path) -> ArenaDataset:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if self._key != key or self._dataset is None:
                self._dataset, self._key = None, None  # one dataset in memory at a time
                self._dataset, self._key = read_arena_csv(path), key
            return self._dataset


_last_dataset = _LastDataset()


def load_job_dataset(settings: Settings, dataset_id: str) -> ArenaDataset:
    path = dataset_csv_path(settings.SHARED_DIR, dataset_id)
    if not path.is_file():
        # Not a user error: on shared storage a file can be briefly invisible, so this is worth a retry. The
        # message names the file relative to SHARED_DIR: job records are shown to users, host paths are not.
        raise FileNotFoundError(
            f"dataset file datasets/{dataset_id}/{path.name} is missing from shared storage; upload the dataset again"
        )
    return _last_dataset.read(path)


def run_predict_chunk(
    settings: Settings, *, job_id: str, chunk_index: int, worker: str | None, task_id: str | None = None
) -> dict:
    """Judge one chunk's rows and publish its probabilities; returns a small summary of the chunk.

    Args:
        settings: worker settings.
        job_id: the job.
        chunk_index: which chunk of the job record.
        worker: this worker's name, recorded for the user and the sweeper.
        task_id: this delivery's task id; a delivery that is not the chunk's current attempt stops at once.

    Raises:
        JobCancelledError: the job was cancelled or failed while this chunk ran.
        StaleDeliveryError: another delivery owns the chunk (re-queued by the sweeper, or sent twice).
    """
    deadline_hint = "raise time_limit_s (at most JOB_TIME_LIMIT_S), add workers or split the dataset"
    with JobRun(
        settings, job_id, unit="rows", chunk_index=chunk_index, deadline_hint=deadline_hint, task_id=task_id,
        worker=worker,
    ) as run:  # fmt: skip
        chunk = run.chunk
        output_path = chunk_path(settings.SHARED_DIR, job_id, chunk_index)
        if output_path.exists():  # a redelivered message: the chunk was published already
            run.store.update_chunk(job_id, chunk_index, state="succeeded", done=chunk.stop - chunk.start)
            return {"chunk": chunk_index, "rows": chunk.stop - chunk.start, "repeated": True}
        run.start(started_at=utc_now())  # counts the attempt (retries and redeliveries alike) and takes the lease
        request = PredictRequest.from_params(settings, run.params)
        rows = dataset_rows(load_job_dataset(settings, run.params["dataset"]), chunk.start, chunk.stop)
        predictor = Predictor.cached(settings, request)
        run.check()  # loading the judge can take minutes on a cold worker
        began = time.monotonic()
        prediction = predictor.predict(rows, on_progress=run.report)
        if settings.CHUNK_EXTRA_DELAY_S:  # a slow device, for tests and benchmarks
            time.sleep(settings.CHUNK_EXTRA_DELAY_S)
        run.check()  # cancelled, failed or past the deadline meanwhile: publish nothing
        _publish_chunk(output_path, prediction, job_id=job_id, chunk_index=chunk_index)
        summary = {
            "chunk": chunk_index, "rows": len(rows), **prediction.summary(), "judge": predictor.description,
            "seconds": round(time.monotonic() - began, 3), **cuda_peak_memory(),
        }  # fmt: skip
        run.store.update_chunk(
            job_id, chunk_index, if_task_id=task_id, state="succeeded", done=len(rows), summary=summary,
            finished_at=utc_now(),
        )  # fmt: skip
        return summary


def claim_assembly(store: JobStore, job_id: str, *, worker: str, instance: str | None = None) -> bool:
    """Whether `worker` should assemble the job now: true for exactly one caller, once every chunk succeeded.

    Completion is the set of chunk records in state succeeded, read and claimed under the record's lock, so a
    repeated delivery of a chunk counts once and the last chunk to finish, whichever worker ran it, assembles.
    The claim records the process instance (default: this process's, workers/identity.py): a claim left by an
    earlier instance of the same worker name died with it, so this process takes it over.
    """
    claimed = False
    instance = instance if instance is not None else process_instance()

    def change(record) -> None:
        nonlocal claimed
        earlier_self = (
            record.assembler == worker and instance is not None and record.assembler_instance not in (None, instance)
        )
        if (record.assembler is None or earlier_self) and all(chunk.state == "succeeded" for chunk in record.chunks):
            record.assembler, record.assembler_instance = worker, instance
            record.state = "assembling"
            claimed = True

    store.update(job_id, change)
    return claimed


def _publish_chunk(output_path: Path, prediction, *, job_id: str, chunk_index: int) -> None:
    """The chunk's votes and probabilities, published once (a second delivery keeps the first one's file)."""
    try:
        with atomic_creator(output_path, "wb") as handle:
            write_votes(handle, prediction.judge_result, probabilities=prediction.probabilities)
    except FileExistsError:
        log.warning("chunk %s of job %s was published by another delivery; keeping that one", chunk_index, job_id)


def assemble_predict_job(settings: Settings, *, job_id: str) -> dict:
    """Merge the chunks, in row order, into submission.csv (+ metrics.json, votes.npz) and finish the job.

    Raises:
        ArtifactWriteError: the files could not be written (disk full, read-only); the job is failed with the
            reason and none of its files is published.
    """
    store = JobStore(settings.SHARED_DIR)
    record = store.read(job_id)
    if record.terminal:
        return {"job_id": job_id, "state": record.state}
    guard = AssemblyGuard(store, job_id, time_limit_s=settings.ASSEMBLY_TIME_LIMIT_S)
    try:
        return _assemble(settings, store, record, guard)
    except JobCancelledError as exc:
        # Cancelled (or failed elsewhere) while assembling: stop here, nothing published; the record says why.
        log.info("job %s: assembly stopped: %s", job_id, exc)
        return {"job_id": job_id, "state": store.read(job_id).state}


def _assemble(settings: Settings, store: JobStore, record, guard: AssemblyGuard) -> dict:
    job_id = record.id
    dataset = load_job_dataset(settings, record.params["dataset"])
    guard.check()
    paths = [chunk_path(settings.SHARED_DIR, job_id, chunk.index) for chunk in sorted(record.chunks, key=_index)]
    votes = concatenate_results([load_votes(path) for path in paths])
    ids = votes.ids
    if ids != dataset.ids:
        raise RuntimeError(f"job {job_id}: the chunks cover {len(ids)} rows that do not match the dataset's order")
    probabilities = np.concatenate([_stored_probabilities(path) for path in paths])
    guard.check()
    output_dir = job_output_dir(settings.SHARED_DIR, job_id)
    metrics = {
        # Relative to SHARED_DIR: records and results are shown to users, host paths are not.
        "submission_path": str(output_dir.relative_to(settings.SHARED_DIR) / SUBMISSION_NAME),
        "rows": len(ids),
        "truncated_rows": int(votes.truncated.sum()),
        "chunks": sorted(
            [chunk.summary for chunk in record.chunks if chunk.summary], key=lambda summary: summary.get("chunk", 0)
        ),
        "workers": worker_shares(record),
    }
    # Each chunk ran on its own worker: the job's CUDA peak is the largest of theirs.
    chunk_peaks = [summary.get(CUDA_PEAK_KEY) for summary in metrics["chunks"] if summary.get(CUDA_PEAK_KEY)]
    if chunk_peaks:
        metrics[CUDA_PEAK_KEY] = max(chunk_peaks)
    probabilities, domain = job_domain_check(settings, probabilities, votes, metrics["chunks"])
    if domain is not None:
        metrics["domain_check"] = domain
    writers = {
        SUBMISSION_NAME: lambda path: write_submission(path, ids, probabilities, floor=settings.PROB_FLOOR),
        VOTES_NAME: lambda path: save_votes(path, votes),
    }
    staging = output_dir / f".report-{uuid.uuid4().hex}"
    try:
        report, report_writers = _report(settings, dataset, probabilities, staging, guard)
        metrics.update(report)
        metrics = redact_host_paths(metrics, settings.SHARED_DIR)  # an artefact and the job's result: shown to users
        writers[METRICS_NAME] = lambda path: path.write_text(json.dumps(metrics, indent=1, default=str))
        writers.update(report_writers)
        guard.check()
        publish_together(output_dir, writers)
    except OSError as exc:
        reason = (
            f"could not write the job's files into submissions/{job_id}/ ({exc.strerror or exc}); nothing was"
            " published. Free space or fix the permissions of SHARED_DIR, then submit the job again"
        )
        store.fail(job_id, reason)
        raise ArtifactWriteError(reason) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    finished = store.succeed(job_id, artifacts=list(writers), result=metrics)
    if finished.state != "succeeded":
        # Cancelled (or failed) while the files were written: a finished job other than succeeded has no files.
        for name in writers:
            (output_dir / name).unlink(missing_ok=True)
        return {"job_id": job_id, "state": finished.state}
    return {"job_id": job_id, "state": "succeeded", "rows": len(ids)}


class ReportsOutOfTimeError(RuntimeError):
    """The assembly's reports ran past ASSEMBLY_TIME_LIMIT_S: the rest are skipped, the submission is published."""


class AssemblyGuard:
    """Cancel and the time limit of one assembly, checked between its steps and during the leaderboard's bootstrap.

    The limit is a duration on this worker's monotonic clock, never a wall-clock time compared across hosts.
    """

    def __init__(self, store: JobStore, job_id: str, *, time_limit_s: float) -> None:
        self.store = store
        self.job_id = job_id
        self.time_limit_s = time_limit_s
        self.deadline = time.monotonic() + time_limit_s
        self._checked_at = -math.inf

    def check(self) -> None:
        """Raise JobCancelledError when the job was cancelled or failed while this worker assembles it."""
        self._checked_at = time.monotonic()
        record = self.store.read(self.job_id)
        if record.terminal:
            raise JobCancelledError(f"job {self.job_id} was {record.state} while its submission was assembled")

    def check_report(self, *_progress: object) -> None:
        """check() at most once a second (a progress callback calls this often), then the time limit.

        Raises:
            JobCancelledError: the job was cancelled or failed.
            ReportsOutOfTimeError: past ASSEMBLY_TIME_LIMIT_S.
        """
        now = time.monotonic()
        if now - self._checked_at >= 1.0:
            self.check()
        if now > self.deadline:
            raise ReportsOutOfTimeError(
                f"not made: the assembly's reports took longer than ASSEMBLY_TIME_LIMIT_S ({self.time_limit_s:g}s);"
                " raise it, or lower LEADERBOARD_BOOTSTRAP"
            )


def _report(
    settings: Settings, dataset: ArenaDataset, probabilities: np.ndarray, staging: Path, guard: AssemblyGuard
) -> tuple[dict, dict[str, Callable[[Path], object]]]:
    """What a labelled dataset or one with model names adds to the job's report: its metrics and its files.

    Labels: log loss, accuracy, per source, the confusion matrix, the reliability table and diagram. Model names:
    the leaderboard from the predictions (and, with labels, the human one and their agreement), drawn in
    `staging`, then published with the job's other files. A report that cannot be made (one model, names missing,
    a figure that fails to draw, ASSEMBLY_TIME_LIMIT_S reached) is left out with the reason in metrics.json
    (`leaderboard.skipped`, `reports_skipped`); the job still succeeds with its submission. Only a cancel stops it.
    """
    metrics: dict = {}
    writers: dict[str, Callable[[Path], object]] = {}
    skipped: dict[str, str] = {}
    scored_probabilities = normalise_probabilities(probabilities, floor=settings.PROB_FLOOR)
    staging.mkdir(parents=True, exist_ok=True)

    def scores() -> None:
        from workers.reports.evaluate import confusion_counts, reliability_table, score_predictions

        scored = score_predictions(
            dataset.labels, scored_probabilities, sources=dataset.sources, max_sources=settings.MAX_REPORT_SOURCES
        )
        metrics.update(
            {key: scored[key] for key in ("log_loss", "accuracy", "per_source", "per_source_note") if key in scored}
        )
        metrics["confusion_matrix"] = confusion_counts(dataset.labels, scored_probabilities)
        metrics["reliability"] = reliability_table(dataset.labels, scored_probabilities)

    def reliability_diagram() -> None:
        from workers.reports.evaluate import plot_reliability

        drawn = plot_reliability(
            dataset.labels, scored_probabilities, staging / RELIABILITY_NAME, title="predicted vs human"
        )
        writers[RELIABILITY_NAME] = lambda path: shutil.copyfile(drawn, path)

    def leaderboard() -> None:
        from workers.reports.leaderboard import write_dataset_leaderboards

        board = write_dataset_leaderboards(
            dataset, staging, predictions=scored_probabilities, bootstrap=settings.LEADERBOARD_BOOTSTRAP,
            name="the dataset", on_progress=guard.check_report,
        )  # fmt: skip
        metrics["leaderboard"] = {key: value for key, value in board.items() if key != "files"}
        for name in board["files"]:
            writers[name] = lambda path, drawn=staging / name: shutil.copyfile(drawn, path)

    steps: list[tuple[str, Callable[[], None]]] = []
    if dataset.labels is not None:
        steps += [("scores", scores), ("reliability_diagram", reliability_diagram)]
    if dataset.models_a is not None:
        steps.append(("leaderboard", leaderboard))
    for name, make in steps:
        try:
            guard.check_report()
            make()
        except JobCancelledError:
            raise
        except Exception as exc:  # a report is an extra: whatever stops it, the submission is still published
            from workers.reports.leaderboard import LeaderboardError

            if isinstance(exc, ReportsOutOfTimeError | LeaderboardError):
                reason = str(exc)
            else:
                reason = short(f"{type(exc).__name__}: {exc}", 300)
                log.exception("job %s: the %s report failed; publishing without it", guard.job_id, name)
            if name == "leaderboard":
                metrics["leaderboard"] = {"skipped": reason}
            else:
                skipped[name] = reason
    if skipped:
        metrics["reports_skipped"] = skipped
    return metrics, writers


def job_domain_check(
    settings: Settings, probabilities: np.ndarray, votes: JudgeResult, chunk_summaries: list[dict]
) -> tuple[np.ndarray, dict | None]:
    """Whether the job's prompts are like its text predictor's training data (workers/predictor/domain.py), and
    its probabilities after the check (when unlike: its transfer model's, or shrunk toward the training prior).

    Only a text predictor (the default one, or `arena train --text-only`) has this check: other judges get None.
    One fitted before the check existed says so; a chunk without the values (judged before this version) leaves
    the job without a check too, rather than judging on part of the rows.
    """
    from workers.predictor.domain import NO_REFERENCE_NOTE, checked_probabilities

    judges = [summary.get("judge") or {} for summary in chunk_summaries]
    if not judges or any(judge.get("kind") != "text model" for judge in judges):
        return probabilities, None
    figures = judges[0].get("domain_reference")
    if figures is None or votes.prompt_nearest_cosine is None:
        return probabilities, {"note": NO_REFERENCE_NOTE}
    return checked_probabilities(
        probabilities,
        votes.prompt_nearest_cosine,
        figures,
        settings=settings,
        transfer_logprobs=votes.transfer_logprobs,
    )


def worker_shares(record) -> dict[str, dict]:
    """Per worker: the chunks and rows it judged and its seconds judging them (the last attempt of each chunk)."""
    shares: dict[str, dict] = {}
    for chunk in record.chunks:
        if chunk.state != "succeeded" or chunk.worker is None:
            continue
        share = shares.setdefault(chunk.worker, {"chunks": 0, "rows": 0, "seconds": 0.0})
        share["chunks"] += 1
        share["rows"] += chunk.stop - chunk.start
        if chunk.started_at is not None and chunk.finished_at is not None:
            share["seconds"] = round(share["seconds"] + (chunk.finished_at - chunk.started_at).total_seconds(), 3)
    return dict(sorted(shares.items()))


def _index(chunk) -> int:
    return chunk.index


def _stored_probabilities(path: Path) -> np.ndarray:
    with np.load(path) as stored:
        return stored["probabilities"]
