"""Scores of predictions against labels: log loss, accuracy, per source, reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workers.common.figures import figure_text, new_figure, save_png
from workers.common.groups import top_groups
from workers.common.soft_labels import multiclass_log_loss, row_log_losses
from workers.judge.outcomes import CLASS_LABELS

DEFAULT_MAX_SOURCES = 20  # MAX_REPORT_SOURCES's default: a job passes the setting


def score_predictions(
    labels: np.ndarray,
    probabilities: np.ndarray,
    sources: Sequence[str] | None = None,
    *,
    max_sources: int = DEFAULT_MAX_SOURCES,
) -> dict:
    """Log loss, accuracy (argmax against the majority label) and the class prior's log loss for scale.

    With `sources`: per-source rows, log loss and accuracy, largest source first, in O(rows) whatever the number of
    sources; past `max_sources` the rest are one "(other N sources)" entry and `per_source_note` says so.
    """
    prior = np.tile(labels.mean(axis=0), (len(labels), 1))
    metrics = {
        "rows": int(len(labels)),
        "log_loss": multiclass_log_loss(labels, probabilities),
        "accuracy": float((probabilities.argmax(axis=1) == labels.argmax(axis=1)).mean()),
        "uniform_log_loss": float(np.log(3)),
        "class_prior_log_loss_in_sample": multiclass_log_loss(labels, prior),
        "mean_predicted": dict(zip(CLASS_LABELS, probabilities.mean(axis=0).round(4).tolist(), strict=True)),
        "label_share": dict(zip(CLASS_LABELS, labels.mean(axis=0).round(4).tolist(), strict=True)),
    }
    if sources is not None:
        groups = top_groups(sources, max_groups=max_sources, what="sources")
        losses = np.bincount(groups.codes, weights=row_log_losses(labels, probabilities), minlength=len(groups.names))
        hits = np.bincount(
            groups.codes,
            weights=(probabilities.argmax(axis=1) == labels.argmax(axis=1)).astype(np.float64),
            minlength=len(groups.names),
        )
        metrics["per_source"] = {
            name: {"rows": int(count), "log_loss": float(loss / count), "accuracy": float(hit / count)}
            for name, count, loss, hit in zip(groups.names, groups.counts, losses, hits, strict=True)
        }
        if groups.note is not None:
            metrics["per_source_note"] = groups.note
    return metrics


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """How many rows of each human label (rows: the majority label) got each predicted class (columns: argmax)."""
    counts = np.zeros((len(CLASS_LABELS), len(CLASS_LABELS)), dtype=int)
    np.add.at(counts, (labels.argmax(axis=1), probabilities.argmax(axis=1)), 1)
    return {"labels": list(CLASS_LABELS), "counts": counts.tolist()}


def reliability_table(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> dict:
    """Per class: mean predicted probability vs observed frequency in equal-width bins."""
    edges = np.linspace(0, 1, n_bins + 1)
    table = {}
    for index, name in enumerate(CLASS_LABELS):
        predicted = probabilities[:, index]
        observed = labels[:, index]
        bins = np.clip(np.digitize(predicted, edges[1:-1]), 0, n_bins - 1)
        rows = []
        for bin_index in range(n_bins):
            mask = bins == bin_index
            if mask.any():
                rows.append(
                    {
                        "predicted": float(predicted[mask].mean()),
                        "observed": float(observed[mask].mean()),
                        "count": int(mask.sum()),
                    }
                )
        table[name] = rows
    return table


def plot_reliability(labels: np.ndarray, probabilities: np.ndarray, path: Path, *, title: str = "") -> Path:
    table = reliability_table(labels, probabilities)
    with new_figure(figsize=(5.5, 5)) as (figure, axis):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
        for name, rows in table.items():
            if rows:
                axis.plot(
                    [row["predicted"] for row in rows],
                    [row["observed"] for row in rows],
                    marker="o",
                    label=f"{name} (mean p={probabilities[:, CLASS_LABELS.index(name)].mean():.2f})",
                )
        axis.set_xlabel("predicted probability")
        axis.set_ylabel("observed frequency")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_title(figure_text(title or "Reliability diagram", limit=None))
        axis.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        return save_png(figure, path)
