"""Scores of predictions against labels: log loss, accuracy, per source, reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workers.common.soft_labels import multiclass_log_loss
from workers.judge.outcomes import CLASS_LABELS


def score_predictions(labels: np.ndarray, probabilities: np.ndarray, sources: Sequence[str] | None = None) -> dict:
    """Log loss, accuracy (argmax against the majority label) and the class prior's log loss for scale."""
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
        per_source = {}
        source_array = np.asarray(sources)
        for source in sorted(set(sources)):
            rows = source_array == source
            per_source[source] = {
                "rows": int(rows.sum()),
                "log_loss": multiclass_log_loss(labels[rows], probabilities[rows]),
                "accuracy": float((probabilities[rows].argmax(axis=1) == labels[rows].argmax(axis=1)).mean()),
            }
        metrics["per_source"] = per_source
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.storage import atomic_writer

    table = reliability_table(labels, probabilities)
    figure, axis = plt.subplots(figsize=(5.5, 5))
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
    axis.set_title(title or "Reliability diagram")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    with atomic_writer(Path(path), "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return Path(path)
