"""The synth job step the Celery task `arena.synth` runs (no Celery in here).

Path of a synth job: POST /v1/jobs/synth stores the job record and sends `arena.synth` by name; the task calls
`run_synth_job`, which labels the dataset into SHARED_DIR/synth/<job_id>/ (workers/synth/labelling.py),
reports distinct pairs done in the job record, registers pairs.csv as a new dataset (so a train job can use
it at once through `extra_datasets`), and links pairs.csv, annotations.jsonl and metrics.json into
submissions/<job_id>/ for GET /v1/jobs/{id}/artifacts/{name}.

A redelivered message (the worker died) resumes: chunks already in synth/<job_id>/chunks/ are not labelled
again, and a dataset registered already is reused (its id is derived from the job id). Cancelling or the
job's time limit stops it between chunks.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from shared.artifacts import METRICS_NAME, SYNTH_ANNOTATIONS_NAME, SYNTH_DIR_NAME, SYNTH_PAIRS_NAME
from shared.dataset_store import DatasetStore
from shared.schemas import SynthJobRequest
from shared.settings import Settings
from shared.storage import dataset_csv_path, job_output_dir, link_or_copy, resolve_judge_files
from workers.jobs.run import JobRun
from workers.judge.engines import EngineConfig
from workers.predictor.predictor import close_cached_judges
from workers.synth.labelling import (
    SynthConfig,
    SynthError,
    Teacher,
    run_synth,
)

log = logging.getLogger(__name__)


def synth_config_from_params(settings: Settings, params: dict, *, job_id: str) -> SynthConfig:
    """SynthConfig from a stored SynthJobRequest (shared/schemas.py, the one source of the synth defaults)."""
    request = SynthJobRequest.model_validate(params)
    if settings.teacher_parallel_refusal:  # the gateway refuses it too; this worker's own settings may differ
        raise SynthError(settings.teacher_parallel_refusal)
    try:
        teacher, _, _ = resolve_judge_files(settings.SHARED_DIR, settings.judge_model_path, model=request.teacher_model)
    except FileNotFoundError as exc:
        raise SynthError(str(exc)) from None
    input_path = dataset_csv_path(settings.SHARED_DIR, request.dataset)
    if not input_path.is_file():
        raise SynthError(f"dataset {request.dataset} is missing from shared storage; upload it again")
    return SynthConfig(
        input_path=str(input_path),
        output_dir=str(settings.SHARED_DIR / SYNTH_DIR_NAME / job_id),
        teacher_model=str(teacher),
        chunk_pairs=request.chunk_pairs,
        rationale_tokens=request.rationale_tokens,
        max_model_len=settings.MAX_MODEL_LEN,
        seed=request.seed,
        limit=request.limit,
    )


def teacher_engine_config(settings: Settings) -> EngineConfig:
    """The teacher's engine: the judge's engine settings (GPU_MEMORY_UTILIZATION included), on vLLM, spread over
    TEACHER_TENSOR_PARALLEL GPUs."""
    return EngineConfig.from_settings(settings, kind="vllm", tensor_parallel_size=settings.TEACHER_TENSOR_PARALLEL)


def run_synth_job(settings: Settings, *, job_id: str, task_id: str | None = None, worker: str | None = None) -> dict:
    """Label the job's dataset, reporting progress in its record; returns the job's result.

    Raises:
        JobCancelledError: the job was cancelled (or failed elsewhere) before or while it ran.
        SynthError, DataFormatError: the request cannot run as given (the job should fail).
    """
    deadline_hint = "finished chunks are kept; raise time_limit_s, or submit the rest with `limit`"
    with JobRun(
        settings, job_id, unit="distinct pairs", deadline_hint=deadline_hint, task_id=task_id, worker=worker
    ) as run:
        config = synth_config_from_params(settings, run.params, job_id=job_id)
        run.start()

        def teacher_factory() -> Teacher:
            close_cached_judges()  # one engine per worker: the teacher takes the judge's memory
            return Teacher(config, engine_config=teacher_engine_config(settings))

        metrics = run_synth(config, teacher_factory=teacher_factory, on_progress=run.report)
        return _publish_synth(settings, run, config, metrics)


def synth_dataset_id(job_id: str) -> str:
    """The id of the dataset a synth job registers, the same on every delivery of the job.

    A message redelivered after the worker registered pairs.csv but died before the job was marked succeeded
    runs the step again; a fixed id makes that second registration find the first instead of adding a copy.
    Hashed rather than the job id itself, so a dataset id is never also a job id.
    """
    return hashlib.sha256(f"synth-dataset:{job_id}".encode()).hexdigest()[:32]


def _publish_synth(settings: Settings, run: JobRun, config: SynthConfig, metrics: dict) -> dict:
    """Register pairs.csv as a dataset, link the files into submissions/<job_id>/ and finish the job."""
    job_id = run.job_id
    output_dir = Path(config.output_dir)
    datasets = DatasetStore(settings.SHARED_DIR, max_bytes=settings.MAX_UPLOAD_BYTES)
    dataset = datasets.register(
        output_dir / SYNTH_PAIRS_NAME, name=f"synth-{job_id}.csv", dataset_id=synth_dataset_id(job_id),
        tenant=run.record.tenant,
    )  # fmt: skip
    job_dir = job_output_dir(settings.SHARED_DIR, job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    artifacts = [SYNTH_PAIRS_NAME, SYNTH_ANNOTATIONS_NAME, METRICS_NAME]
    for name in artifacts:
        if not (job_dir / name).exists():
            link_or_copy(output_dir / name, job_dir / name)
    human = metrics.get("versus_human_labels") or {}
    result = {
        "synth_dir": f"synth/{job_id}",
        "dataset": dataset.id,
        "rows": metrics["rows"],
        "distinct_pairs": metrics["distinct_pairs"],
        "chunks_reused": metrics["chunks_reused"],
        "pairs_per_second": metrics["throughput"]["pairs_per_second"],
        "generated_tokens_per_second": metrics["throughput"]["generated_tokens_per_second"],
        "rationale_parse_failures": metrics["rationales"]["parse_failures"],
        "agreement_with_human_labels": human.get("agreement"),
        "log_loss_against_human_labels": human.get("log_loss"),
    }
    run.succeed(artifacts=artifacts, result=result)
    return {"job_id": job_id, "state": "succeeded", "dataset": dataset.id}
