"""What a finished run reports beside its adapter: the learning curve, figures per epoch, counts, memory."""

from __future__ import annotations

import math
import resource
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.storage import atomic_writer


def plot_learning_curve(history: dict, path: Path, *, title: str) -> Path:
    """Training loss (mean over each logging window) and validation log loss against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    if history["train"]:
        steps, losses = (np.array(values) for values in zip(*history["train"], strict=True))
        axis.plot(steps, losses, label="train loss (per step)", color="tab:blue", alpha=0.25, linewidth=0.8)
        window = min(20, len(losses))
        smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smoothed, color="tab:blue", label=f"train loss ({window}-step mean)")
    if history["val"]:
        val_steps = [entry["step"] for entry in history["val"]]
        axis.plot(
            val_steps,
            [entry["log_loss"] for entry in history["val"]],
            "o-",
            color="tab:red",
            label="validation log loss (both orders averaged)",
        )
    axis.axhline(math.log(3), color="grey", linestyle="--", linewidth=1, label="uniform (ln 3)")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("log loss")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_writer(Path(path), "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return Path(path)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def count_values(values: Sequence[str]) -> dict[str, int]:
    unique, counts = np.unique(np.asarray(values), return_counts=True)
    return {str(value): int(count) for value, count in zip(unique, counts, strict=True)}


def per_epoch(history: dict, steps_per_epoch: int) -> list[dict]:
    """Mean train loss and the last validation figures of each (whole or partial) epoch."""
    by_epoch: dict[int, dict] = {}
    for step, loss in history["train"]:
        by_epoch.setdefault((step - 1) // steps_per_epoch, {"losses": []})["losses"].append(loss)
    for entry in history["val"]:
        by_epoch.setdefault((entry["step"] - 1) // steps_per_epoch, {"losses": []}).update(
            val_step=entry["step"], val_log_loss=entry["log_loss"], val_accuracy=entry["accuracy"]
        )
    return [
        {"epoch": epoch + 1, "train_loss": float(np.mean(values.pop("losses"))) if values["losses"] else None, **values}
        for epoch, values in sorted(by_epoch.items())
    ]
