"""Fit a text predictor (text model + its calibrator, no LLM) from labelled CSVs: the default predict path.

A text predictor is a folder with `text_model.json` (sentence-encoder, length and style features, LightGBM on
both orders: predictor/text_model.py), `calibration.json` (a multinomial LR over the text model's out-of-fold
log-probabilities, mirrored so that swapping A and B swaps the output) and `metrics.json` (its grouped-CV
figures). `make setup` fits one on DEFAULT_TRAIN_CSV into SHARED_DIR/models/DEFAULT_PREDICTOR; `arena train
--text-only` rebuilds it, or another one, from any labelled CSV.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from shared.arena_csv import ArenaDataset, read_arena_csv
from shared.artifacts import CALIBRATION_NAME, DOMAIN_REFERENCE_NAME, METRICS_NAME, TEXT_MODEL_NAME
from shared.storage import atomic_write_text, replace_folder

log = logging.getLogger(__name__)

TEXT_PREDICTOR_KIND = "text"
# Fewest of the user's rows the calibrator is fitted on alone when other rows (the shipped data) are mixed in:
# from 100 rows up (100, 200, 800, all), a calibrator on the user's rows scored better on their held-out rows than
# one on every row, on both sources measured (scripts/bench/bench_user_mixing.py, docs/benchmarks.md "Mixing");
# fewer were not measured.
MIN_CALIBRATION_ROWS = 100


def read_training_csvs(paths: Sequence[Path], *, names: Sequence[str] | None = None) -> tuple[ArenaDataset, list[int]]:
    """The labelled rows of every CSV, in order; an id that appears twice is refused (it would leak across folds).

    With `names` (one per CSV: a job mixing datasets of different owners, whose ids may collide and mean nothing
    to each other), ids may repeat (folds are grouped by prompt anyway) and a CSV without a `source` column has its
    name as every row's source. Also returns each CSV's row count.
    """
    from shared.arena_csv import DataFormatError

    parts = [read_arena_csv(Path(path), require_labels=True) for path in paths]
    pairs = [pair for part in parts for pair in part.pairs]
    ids = [pair.id for pair in pairs]
    if names is None and len(set(ids)) != len(ids):
        raise DataFormatError("the training CSVs share row ids; give each row one id across all --input files")
    sources = None
    if names is not None:
        sources = [s for part, name in zip(parts, names, strict=True) for s in (part.sources or [name] * len(part))]
    elif all(part.sources is not None for part in parts):
        sources = [source for part in parts for source in part.sources]
    labels = np.vstack([part.labels for part in parts])
    return ArenaDataset(pairs=pairs, labels=labels, sources=sources), [len(part) for part in parts]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# on_stage(stage, done, total): "embedding" counts distinct texts, "fitting" boosters (CV folds, then the final one).
StageProgress = Callable[[str, int, int], None]


def fit_text_predictor(
    *,
    inputs: Sequence[Path],
    output_dir: Path,
    text_encoder: str,
    seed: int = 0,
    device: str | None = None,
    on_stage: StageProgress | None = None,
    input_weights: Sequence[float] | None = None,
    input_names: Sequence[str] | None = None,
    max_rows: int | None = None,
    learning_curve_inputs: int = 0,
    calibration_inputs: int | None = None,
) -> dict:
    """Fit the text model and its calibrator on labelled CSVs and publish them as one folder.

    Args:
        inputs: labelled arena CSVs (Kaggle train schema).
        output_dir: the predictor folder to create or replace (replaced whole, only once everything is written).
        text_encoder: the sentence-encoder folder the text model reads.
        seed: seed of the PCA and LightGBM.
        device: torch device of the encoder (None: CUDA when visible, else CPU).
        on_stage: progress of the long stages, `(stage, done, total)`.
        input_weights: a loss weight per input (default 1 each).
        input_names: a name per input (see read_training_csvs): ids may repeat, sources default to the names.
        max_rows: refuse more rows than this in all (memory and time grow with the rows).
        learning_curve_inputs: when > 0, the first that many inputs are "the user's rows": the metrics get a
            learning curve (see learning_curve) of those rows' grouped CV at 25, 50 and 100% of them.
        calibration_inputs: when given, the calibrator is fitted on the out-of-fold outputs of the first that many
            inputs' rows only (the user's, not the shipped data mixed in), if they are at least
            MIN_CALIBRATION_ROWS; else (and by default) on every row.

    Returns:
        The predictor's metrics (also written to metrics.json): grouped-CV log loss of the text model and of the
        calibrated output, per source when the CSVs have a `source` column, and timings.
    """
    from shared.settings import get_settings
    from workers.common.pairs import prompt_groups
    from workers.common.soft_labels import multiclass_log_loss
    from workers.predictor.calibration import fit_calibrator
    from workers.predictor.sentence_encoder import open_text_encoder
    from workers.predictor.text_model import TEXT_RECIPE_VERSION, TextModelError, embed_pairs, fit_text_model
    from workers.reports.evaluate import score_predictions

    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if on_stage is None else lambda done, total: on_stage(name, done, total)

    started = time.perf_counter()
    dataset, sizes = read_training_csvs(inputs, names=input_names)
    if max_rows is not None and len(dataset) > max_rows:
        raise TextModelError(
            f"{len(dataset):,} labelled rows is over the limit of {max_rows:,} (TEXT_FIT_MAX_ROWS); fit on fewer rows"
            " or sample them"
        )
    weights = np.repeat(np.asarray(input_weights, dtype=float), sizes) if input_weights else None
    encoder = open_text_encoder(get_settings(), text_encoder, device=device)
    embeddings = embed_pairs(dataset.pairs, encoder, on_progress=stage("embedding"))
    embed_seconds = time.perf_counter() - started
    groups = prompt_groups(dataset.pairs)
    fit = fit_text_model(
        dataset.pairs,
        dataset.labels,
        embeddings,
        groups=groups,
        weights=weights,
        seed=seed,
        encoder=encoder.name,
        encoder_backend=encoder.backend,
        on_progress=stage("fitting"),
    )
    out_of_fold_logprobs = np.log(np.clip(fit.out_of_fold, 1e-12, 1.0))
    calibration_rows = np.arange(len(dataset))
    if calibration_inputs is not None and sum(sizes[:calibration_inputs]) >= MIN_CALIBRATION_ROWS:
        calibration_rows = np.arange(sum(sizes[:calibration_inputs]))
    calibrator = fit_calibrator(
        None,
        [dataset.pairs[row] for row in calibration_rows],
        dataset.labels[calibration_rows],
        text_logprobs=out_of_fold_logprobs[calibration_rows],
        with_length=False,
        fitted_on={"predictor": output_dir.name, "kind": TEXT_PREDICTOR_KIND, "rows": len(calibration_rows)},
    )
    calibrated = calibrator.predict(None, dataset.pairs, text_logprobs=out_of_fold_logprobs)
    cv_by_regularisation = calibrator.fitted_on.get("cv_log_loss_by_regularisation") or {}
    metrics = {
        "kind": TEXT_PREDICTOR_KIND,
        "recipe_version": TEXT_RECIPE_VERSION,
        "encoder": encoder.name,
        "encoder_backend": encoder.backend,
        "rows": len(dataset),
        "inputs": [{"name": Path(path).name, "sha256": _file_digest(Path(path))} for path in inputs],
        "seed": seed,
        "boosting_rounds": fit.model.fitted_on["rounds"],
        # Each row predicted by fold models that never saw its prompt (5 folds grouped by prompt).
        "text_model_cv_log_loss": multiclass_log_loss(dataset.labels, fit.out_of_fold),
        # The calibrated output's own grouped CV (on the rows it was fitted on): the unbiased figure of what ships.
        "calibrator_cv_log_loss": min(cv_by_regularisation.values()) if cv_by_regularisation else None,
        "calibrator_rows": len(calibration_rows),
        # Per source; the calibrator was fitted on these rows, so this is a little optimistic (see the line above).
        "out_of_fold": score_predictions(dataset.labels, calibrated, dataset.sources),
        "embed_seconds": round(embed_seconds, 1),
    }
    if input_weights:
        metrics["input_weights"] = [float(weight) for weight in input_weights]
    if learning_curve_inputs > 0:
        user_rows = int(sum(sizes[:learning_curve_inputs]))
        metrics["learning_curve"] = learning_curve(
            dataset,
            embeddings,
            groups,
            weights=weights,
            user_rows=np.arange(user_rows),
            full_out_of_fold=fit.out_of_fold,
            seed=seed,
            on_progress=stage("learning curve"),
        )
    class_prior = dataset.labels[calibration_rows].mean(axis=0)
    domain_reference = _domain_reference(dataset, embeddings, groups, metrics, class_prior=class_prior, seed=seed)
    metrics["domain_reference"] = domain_reference.figures
    metrics["fit_seconds"] = round(time.perf_counter() - started, 1)
    output_dir = Path(output_dir)

    def fill(staging: Path) -> None:
        fit.model.save(staging / TEXT_MODEL_NAME)
        calibrator.save(staging / CALIBRATION_NAME)
        domain_reference.save(staging / DOMAIN_REFERENCE_NAME)
        atomic_write_text(staging / METRICS_NAME, json.dumps(metrics, indent=1, default=str))

    replace_folder(output_dir, fill)
    log.info("text predictor %s: grouped-CV log loss %.4f", output_dir.name, metrics["out_of_fold"]["log_loss"])
    return metrics


def _domain_reference(
    dataset: ArenaDataset, embeddings, groups: np.ndarray, metrics: dict, *, class_prior: np.ndarray, seed: int
):
    """The training prompts a predict job's domain check compares against (predictor/domain.py), and the figures
    it reports: the check's statistic on the fit's own grouped folds, the log loss to expect in domain, and the
    class prior (of the calibrator's rows) an unlike job is shrunk toward."""
    from workers.predictor.domain import (
        DOMAIN_REFERENCE_PROMPTS,
        UNLIKE_DATA_LOG_LOSS,
        DomainReference,
        in_domain_statistics,
        sample_distinct,
    )
    from workers.predictor.text_model import prompt_text

    keys = [prompt_text(pair) for pair in dataset.pairs]
    prompts = sample_distinct(embeddings.prompt, keys, limit=DOMAIN_REFERENCE_PROMPTS, seed=seed)
    expected = metrics["calibrator_cv_log_loss"] or metrics["out_of_fold"]["log_loss"]
    figures = {
        "reference_prompts": len(prompts),
        "in_domain_statistics": in_domain_statistics(
            embeddings.prompt, keys, groups, limit=DOMAIN_REFERENCE_PROMPTS, seed=seed
        ),
        "expected_log_loss_in_domain": round(float(expected), 4),
        # Measured by leaving each source of ../shared/data out (docs/benchmarks.md, "Generalisation").
        "unlike_data_log_loss": UNLIKE_DATA_LOG_LOSS,
        "class_prior": [round(float(value), 6) for value in class_prior],
    }
    return DomainReference(prompts=prompts.astype(np.float16), figures=figures)


LEARNING_CURVE_FRACTIONS = (0.25, 0.5, 1.0)


def learning_curve(
    dataset: ArenaDataset,
    embeddings,
    groups: np.ndarray,
    *,
    weights: np.ndarray | None,
    user_rows: np.ndarray,
    full_out_of_fold: np.ndarray,
    seed: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Grouped-CV log loss on the user's rows when the model sees 25, 50 and 100% of them (their prompt groups
    drawn at random; any other rows, e.g. the shipped data, stay whole), and what twice as many rows should give.

    The extrapolation fits the log loss as a straight line in log2(rows) (least squares over the three points):
    the slope is the change per doubling, and "at twice the rows" is the 100% figure plus that slope. On
    ../shared/data the same model gained about 0.025 per doubling from 25 to 100% (FACTS.md, "Generalisation").
    A slope that comes out positive (noise on few rows) is reported as no expected gain.
    """
    from workers.common.soft_labels import multiclass_log_loss
    from workers.predictor.text_model import PairEmbeddings, fit_text_model

    rng = np.random.default_rng(seed)
    user_groups = np.unique(groups[user_rows])
    order = rng.permutation(user_groups)
    others = np.setdiff1d(np.arange(len(dataset)), user_rows)
    points = []
    for index, fraction in enumerate(LEARNING_CURVE_FRACTIONS):
        if on_progress is not None:
            on_progress(index, len(LEARNING_CURVE_FRACTIONS))
        if fraction == 1.0:
            probabilities, scored = full_out_of_fold[user_rows], user_rows
        else:
            kept_groups = order[: max(2, int(round(fraction * len(order))))]
            scored = user_rows[np.isin(groups[user_rows], kept_groups)]
            rows = np.concatenate([scored, others])
            if len(np.unique(groups[rows])) < 2:
                continue
            fit = fit_text_model(
                [dataset.pairs[row] for row in rows],
                dataset.labels[rows],
                PairEmbeddings(embeddings.prompt[rows], embeddings.response_a[rows], embeddings.response_b[rows]),
                groups=groups[rows],
                weights=None if weights is None else weights[rows],
                seed=seed,
            )
            probabilities = fit.out_of_fold[: len(scored)]
        points.append(
            {
                "fraction": fraction,
                "rows": int(len(scored)),
                "cv_log_loss": round(multiclass_log_loss(dataset.labels[scored], probabilities), 4),
            }
        )
    if on_progress is not None:
        on_progress(len(LEARNING_CURVE_FRACTIONS), len(LEARNING_CURVE_FRACTIONS))
    curve: dict = {"points": points, "method": "least squares of log loss on log2(rows) over the points"}
    if len(points) >= 2:
        slope = float(np.polyfit(np.log2([p["rows"] for p in points]), [p["cv_log_loss"] for p in points], 1)[0])
        curve["change_per_doubling"] = round(slope, 4)
        curve["expected_cv_log_loss_at_twice_the_rows"] = round(points[-1]["cv_log_loss"] + min(slope, 0.0), 4)
        curve["expected_gain_from_twice_the_rows"] = round(max(-slope, 0.0), 4)
    return curve


def text_predictor_is_current(
    predictor_dir: Path, *, inputs: Sequence[Path], encoder_backend: str | None = None
) -> bool:
    """Whether `predictor_dir` holds a predictor this version can load, fitted by today's recipe on exactly these
    CSVs (and with `encoder_backend`, when given: a predictor fitted on torch embeddings is refitted for the faster
    backend)."""
    from workers.predictor.sentence_encoder import EMBEDDING_VERSION
    from workers.predictor.text_model import TEXT_RECIPE_VERSION, TextModel, TextModelError

    try:
        model = TextModel.load(Path(predictor_dir) / TEXT_MODEL_NAME)
        metrics = json.loads((Path(predictor_dir) / METRICS_NAME).read_text())
    except (TextModelError, OSError, ValueError):
        return False
    if not (Path(predictor_dir) / CALIBRATION_NAME).is_file():
        return False
    if metrics.get("recipe_version", 1) != TEXT_RECIPE_VERSION:
        return False
    if not (Path(predictor_dir) / DOMAIN_REFERENCE_NAME).is_file():
        return False  # fitted before the domain check: refit (same seed, same model) to write its reference
    if encoder_backend is not None and (
        model.encoder_backend != encoder_backend or model.fitted_on.get("embedding_version") != EMBEDDING_VERSION
    ):
        return False
    return [entry.get("sha256") for entry in metrics.get("inputs", [])] == [_file_digest(Path(p)) for p in inputs]
