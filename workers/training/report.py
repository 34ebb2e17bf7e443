"""What a finished run reports beside its adapter: the learning curve, figures per epoch, counts, memory."""

from __future__ import annotations

import math
import resource
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workers.common.figures import figure_text, new_figure, save_png
from workers.common.groups import factorize


def plot_learning_curve(history: dict, path: Path, *, title: str) -> Path:
    """Training loss (mean over each logging window) and validation log loss against optimizer steps."""
    with new_figure(figsize=(6.5, 4.2)) as (figure, axis):
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
        axis.set_title(figure_text(title, limit=None))
        axis.legend(fontsize=8)
        figure.tight_layout()
        return save_png(figure, path)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def count_values(values: Sequence[str]) -> dict[str, int]:
    codes, names = factorize(values, sort=True)  # codes: numpy strings would be as wide as the longest value
    counts = np.bincount(codes, minlength=len(names))
    return {name: int(count) for name, count in zip(names, counts, strict=True)}


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
