"""The text-only train job (`"text_only": true`): fit a text predictor on the user's labelled rows and publish it.

Path: POST /v1/jobs/train stores the job and sends `arena.train`; run_train_job (train.py) claims
adapters/<adapter_name or job id>/ and hands a text_only job to `run_text_fit`, which fits the text predictor
(workers/training/text_predictor.py: sentence-encoder + length/style features, LightGBM on both orders, its
calibrator) on `dataset`, the `extra_datasets` with their weights and, with `include_shipped_data`, DEFAULT_TRAIN_CSV
with `shipped_data_weight`. The folder then holds text_model.json + calibration.json + metrics.json, which predict
jobs (`adapter`) and /v1/score read as any text predictor. metrics.json (grouped CV per source, the learning curve
of the user's rows) and learning_curve.png are copied to submissions/<job_id>/ for GET .../artifacts/{name}.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from shared.artifacts import CALIBRATION_NAME, CURVE_NAME, DOMAIN_REFERENCE_NAME, METRICS_NAME, TEXT_MODEL_NAME
from shared.schemas import TrainJobRequest
from shared.settings import Settings
from shared.storage import atomic_write_text, dataset_csv_path, job_output_dir, redact_host_paths
from workers.jobs.run import JobRun
from workers.training.config import TrainingError

log = logging.getLogger(__name__)

SHIPPED_DATA_NAME = "shipped data"
# The stages of a fit, in order, with what each counts; the job's progress is the stage's own (done, total).
_STAGES = ("embedding", "fitting", "learning curve")


@dataclass
class TextFitInputs:
    """The CSVs a text-only fit reads, a weight and a name each, the user's first."""

    paths: list[Path] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    user_inputs: int = 0  # the first this many are the user's: the learning curve's and the calibrator's rows
    notes: list[str] = field(default_factory=list)


def text_fit_inputs(settings: Settings, request: TrainJobRequest) -> TextFitInputs:
    """The user's dataset and extra datasets, then the shipped data when the request includes it.

    The shipped data is included by default (the measured best mix); left out with a note when that default meets a
    server without it or a fit past TEXT_FIT_MAX_ROWS. Asked for explicitly, its absence fails the job.
    """
    inputs = TextFitInputs()
    for dataset_id, weight in [(request.dataset, 1.0)] + [(e.dataset, e.weight) for e in request.extra_datasets]:
        path = dataset_csv_path(settings.SHARED_DIR, dataset_id)
        if not path.is_file():
            raise TrainingError(f"dataset {dataset_id} is missing from shared storage; upload it again")
        inputs.paths.append(path)
        inputs.weights.append(weight)
        inputs.names.append(f"dataset {dataset_id}")
    inputs.user_inputs = len(inputs.paths)
    if not request.include_shipped_data:
        return inputs
    asked = "include_shipped_data" in request.model_fields_set
    shipped = Path(settings.DEFAULT_TRAIN_CSV)
    if not shipped.is_file():
        if asked:
            raise TrainingError(
                "include_shipped_data: this server has no shipped data (DEFAULT_TRAIN_CSV is missing); fit without it"
            )
        inputs.notes.append("shipped data left out: this server has none (DEFAULT_TRAIN_CSV is missing)")
        return inputs
    if not asked:
        rows = sum(csv_rows(path) for path in inputs.paths) + csv_rows(shipped)
        if rows > settings.TEXT_FIT_MAX_ROWS:
            inputs.notes.append(
                f"shipped data left out: your rows and it make {rows:,}, over TEXT_FIT_MAX_ROWS"
                f" ({settings.TEXT_FIT_MAX_ROWS:,})"
            )
            return inputs
    inputs.paths.append(shipped)
    inputs.weights.append(request.shipped_data_weight)
    inputs.names.append(SHIPPED_DATA_NAME)
    return inputs


def csv_rows(path: Path) -> int:
    """Rows of an arena CSV, without parsing its cells (a quoted cell may hold newlines: csv counts records)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


def run_text_fit(settings: Settings, run: JobRun, *, name: str, output_dir: Path) -> dict:
    """Fit the job's text predictor into `output_dir` (claimed already), report progress, finish the job."""
    from workers.training.text_predictor import fit_text_predictor

    request = TrainJobRequest.model_validate(run.params)
    inputs = text_fit_inputs(settings, request)
    run.start()  # bounded by the job's time limit, as a predict job

    def on_stage(stage: str, done: int, total: int) -> None:
        run.report(done, total, result={"adapter": name, "stage": stage, "stages": list(_STAGES)})

    # Fitted beside the adapter folder, then moved in file by file: replace_folder would take the claim away.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.fit-", dir=output_dir.parent))
    try:
        metrics = fit_text_predictor(
            inputs=inputs.paths,
            output_dir=staging / "predictor",
            text_encoder=settings.text_encoder_path,
            seed=request.seed,
            on_stage=on_stage,
            input_weights=inputs.weights,
            input_names=inputs.names,
            max_rows=settings.TEXT_FIT_MAX_ROWS,
            learning_curve_inputs=1,
            calibration_inputs=inputs.user_inputs,
        )
        if inputs.notes:  # in the folder's metrics.json too, which the adapter listing and the report read
            metrics["notes"] = inputs.notes
            atomic_write_text(staging / "predictor" / METRICS_NAME, json.dumps(metrics, indent=1, default=str))
        if metrics.get("learning_curve"):
            draw_learning_curve(metrics["learning_curve"], staging / "predictor" / CURVE_NAME, title=name)
        # metrics.json last: it marks the adapter finished (shared/adapter_claim.py).
        for artifact in (TEXT_MODEL_NAME, CALIBRATION_NAME, DOMAIN_REFERENCE_NAME, CURVE_NAME, METRICS_NAME):
            if (staging / "predictor" / artifact).is_file():
                shutil.move(staging / "predictor" / artifact, output_dir / artifact)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _publish(settings, run, name=name, output_dir=output_dir, metrics=metrics)


def draw_learning_curve(curve: dict, path: Path, *, title: str) -> Path:
    """The user's grouped-CV log loss against their rows (log2 axis), with the extrapolated point at twice the rows."""
    from workers.common.figures import figure_text, new_figure, save_png

    points = curve["points"]
    with new_figure(figsize=(6.0, 4.0)) as (figure, axis):
        axis.plot([p["rows"] for p in points], [p["cv_log_loss"] for p in points], "o-", label="grouped CV")
        if "expected_cv_log_loss_at_twice_the_rows" in curve:
            last = points[-1]
            axis.plot(
                [last["rows"], 2 * last["rows"]],
                [last["cv_log_loss"], curve["expected_cv_log_loss_at_twice_the_rows"]],
                "o--",
                color="grey",
                label=f"twice the rows (expected gain {curve['expected_gain_from_twice_the_rows']:.3f})",
            )
        axis.axhline(1.0986, color="red", linewidth=0.8, label="uniform guess")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("your labelled rows")
        axis.set_ylabel("log loss (lower is better)")
        axis.set_title(figure_text(f"{title}: learning curve"))
        axis.legend()
        figure.tight_layout()
        return save_png(figure, path)


def _publish(settings: Settings, run: JobRun, *, name: str, output_dir: Path, metrics: dict) -> dict:
    job_dir = job_output_dir(settings.SHARED_DIR, run.job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    public_metrics = redact_host_paths(metrics, settings.SHARED_DIR)
    atomic_write_text(job_dir / METRICS_NAME, json.dumps(public_metrics, indent=1, default=str))
    artifacts = [METRICS_NAME]
    if (output_dir / CURVE_NAME).is_file():
        shutil.copyfile(output_dir / CURVE_NAME, job_dir / CURVE_NAME)
        artifacts.append(CURVE_NAME)
    curve = metrics.get("learning_curve") or {}
    result = {
        "adapter": name,
        "adapter_dir": f"adapters/{name}",
        "kind": "text",
        "rows": metrics["rows"],
        "cv_log_loss": metrics["out_of_fold"]["log_loss"],
        "calibrator_cv_log_loss": metrics.get("calibrator_cv_log_loss"),
        "per_source": metrics["out_of_fold"].get("per_source"),
        "expected_gain_from_twice_the_rows": curve.get("expected_gain_from_twice_the_rows"),
        "fit_seconds": metrics.get("fit_seconds"),
        "calibrator_rows": metrics.get("calibrator_rows"),
        "notes": metrics.get("notes", []),
    }
    run.succeed(artifacts=artifacts, result=result)
    return {"job_id": run.job_id, "state": "succeeded", "adapter": name}
