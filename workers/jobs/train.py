"""The train job step the Celery task `arena.train` runs (no Celery in here).

Path of a train job: POST /v1/jobs/train stores the job record and sends `arena.train` by name; the task
calls `run_train_job`, which trains into SHARED_DIR/adapters/<adapter_name or job_id>/ (workers/training/
train.py), reports step / epoch / validation loss in the job record, and finishes the job with the adapter's
validation figures. metrics.json and learning_curve.png are also copied to submissions/<job_id>/ so that
GET /v1/jobs/{id}/artifacts/{name} serves them; GET /v1/adapters lists the adapter.

A redelivered message (the worker died) resumes from the adapter folder's last checkpoint; a folder that is
finished already is not trained again.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from shared.adapter_claim import AdapterNameTakenError, claim_adapter_dir
from shared.artifacts import CALIBRATION_NAME, CURVE_NAME, METRICS_NAME
from shared.schemas import TrainJobRequest
from shared.settings import Settings
from shared.storage import (
    atomic_write_text,
    dataset_csv_path,
    job_output_dir,
    redact_host_paths,
    resolve_judge_files,
)
from workers.common.hardware import release_cuda_memory
from workers.jobs.run import JobRun
from workers.predictor.predictor import close_cached_judges
from workers.training.config import TrainConfig, TrainingError, TrainingSource, TrainProgress
from workers.training.trainer import train_judge

log = logging.getLogger(__name__)


def _dataset_path(settings: Settings, dataset_id: str) -> Path:
    path = dataset_csv_path(settings.SHARED_DIR, dataset_id)
    if not path.is_file():
        raise TrainingError(f"dataset {dataset_id} is missing from shared storage; upload it again (POST /v1/datasets)")
    return path


def _claim_adapter_dir(settings: Settings, name: str, job_id: str, *, tenant: str | None = None) -> Path:
    """adapters/<name>/, claimed for this job before anything is written there (shared/adapter_claim.py).

    The gateway claimed the name for this job when it accepted it; the worker finds its own claim and goes on,
    as does the same job delivered again (the worker died; it resumes from its checkpoint). A job submitted
    without a claim (the CLI, an older gateway) claims here, atomically: of two such jobs exactly one gets it.

    Raises:
        TrainingError: another job claimed the folder, or it holds files no train job claimed (an adapter put
            there by hand or by the CLI); the message says to choose another adapter_name.
    """
    try:
        return claim_adapter_dir(settings.SHARED_DIR, name, job_id, tenant=tenant)
    except AdapterNameTakenError as exc:
        raise TrainingError(str(exc)) from None


def train_config_from_params(settings: Settings, params: dict, *, output_dir: Path) -> TrainConfig:
    """TrainConfig from a stored TrainJobRequest (shared/schemas.py, the one source of the train defaults); dataset
    ids become shared-storage paths."""
    request = TrainJobRequest.model_validate(params)
    try:
        model_dir, _, _ = resolve_judge_files(settings.SHARED_DIR, settings.judge_model_path, model=request.model)
    except FileNotFoundError as exc:
        raise TrainingError(str(exc)) from None
    sources = [TrainingSource(_dataset_path(settings, request.dataset), 1.0)]
    sources += [
        TrainingSource(_dataset_path(settings, extra.dataset), extra.weight) for extra in request.extra_datasets
    ]
    validation = request.validation_dataset
    # Training stops by itself (publishing the best adapter so far) at the job's budget or the server's limit.
    budgets = [request.time_budget_min * 60] if request.time_budget_min else []
    return TrainConfig(
        sources=sources,
        output_dir=output_dir,
        base_model=str(model_dir),
        validation_path=_dataset_path(settings, validation) if validation else None,
        rank=request.lora_rank,
        alpha=request.lora_alpha,
        dropout=request.lora_dropout,
        target_modules=tuple(request.target_modules),
        lora_top_layers=request.lora_top_layers,
        epochs=request.epochs,
        learning_rate=request.learning_rate,
        max_length=request.max_length,
        batch_size=request.batch_size,
        grad_accum=request.grad_accum,
        seed=request.seed,
        max_steps=request.max_steps,
        time_budget_s=min([*budgets, settings.JOB_TIME_LIMIT_S]),
        val_fraction=request.val_fraction,
        max_val_rows=request.max_val_rows,
        text_encoder=settings.text_encoder_path if request.text_model else None,
        quantization=request.quantization,
    )


def run_train_job(settings: Settings, *, job_id: str, task_id: str | None = None, worker: str | None = None) -> dict:
    """Train the job's adapter, reporting progress in its record; returns the job's result.

    Raises:
        JobCancelledError: the job was cancelled (or failed elsewhere) before or while it trained.
        TrainingError, DataFormatError: the request cannot be trained as given (the job should fail).
    """
    with JobRun(settings, job_id, unit="steps", task_id=task_id, worker=worker) as run:
        name = run.params.get("adapter_name") or job_id
        output_dir = _claim_adapter_dir(settings, name, job_id, tenant=run.record.tenant)
        if run.params.get("text_only"):
            from workers.jobs.text_fit import run_text_fit

            return run_text_fit(settings, run, name=name, output_dir=output_dir)
        config = train_config_from_params(settings, run.params, output_dir=output_dir)
        run.start(deadline=False)  # the time limit is the run's own budget: it stops and publishes its best

        def on_progress(progress: TrainProgress) -> None:
            run.report(progress.step, progress.total_steps, result=_progress_result(name, progress))

        # One owner of the device per worker: the cached judge's vLLM engine holds GPU_MEMORY_UTILIZATION of the
        # card, which training needs; after training, torch's cached blocks go back so that the next job's engine
        # passes vLLM's free-memory check at start.
        close_cached_judges()
        try:
            metrics = train_judge(config, on_progress=on_progress)
        finally:
            release_cuda_memory()
        return _publish_training(settings, run, name=name, output_dir=output_dir, metrics=metrics)


def _progress_result(name: str, progress: TrainProgress) -> dict:
    return {
        "adapter": name,
        "epoch": progress.epoch,
        "train_loss": round(progress.train_loss, 4),
        "val_log_loss": progress.val_log_loss,
        "best_val_log_loss": progress.best_val_log_loss,
        "seconds_per_step": progress.seconds_per_step,
    }


def _publish_training(settings: Settings, run: JobRun, *, name: str, output_dir: Path, metrics: dict) -> dict:
    """Copy metrics.json and the learning curve into submissions/<job_id>/ and finish the job."""
    job_id = run.job_id
    artifacts = []
    job_dir = job_output_dir(settings.SHARED_DIR, job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    for artifact in (METRICS_NAME, CURVE_NAME):
        source = output_dir / artifact
        if not source.is_file():
            continue
        if artifact == METRICS_NAME:  # the copy users download names its paths (base model, sources) as the API does
            public_metrics = redact_host_paths(json.loads(source.read_text()), settings.SHARED_DIR)
            atomic_write_text(job_dir / artifact, json.dumps(public_metrics, indent=1))
        else:
            shutil.copyfile(source, job_dir / artifact)
        artifacts.append(artifact)
    calibration = metrics.get("calibration", {})
    result = {
        "adapter": name,
        "adapter_dir": f"adapters/{name}",
        "calibration": f"adapters/{name}/{CALIBRATION_NAME}" if calibration.get("fitted") else None,
        "validation": {key: value for key, value in metrics.get("validation", {}).items() if key != "loss_per_order"},
        "calibrated_val_log_loss": calibration.get("stacked_cv_log_loss"),
        "steps": metrics.get("steps"),
        "stop_reason": metrics.get("stop_reason"),
        "seconds_per_step": metrics.get("seconds_per_step"),
        "resumed_from_step": metrics.get("resumed_from_step"),
    }
    run.succeed(artifacts=artifacts, result=result)
    return {"job_id": job_id, "state": "succeeded", "adapter": name}
