"""Progress bars on stderr for the long steps of a command."""

from __future__ import annotations

import sys


def progress_bar(total: int, description: str, *, unit: str = "pair"):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


# What each stage of fitting a text predictor counts (workers/training/text_predictor.py).
TEXT_PREDICTOR_STAGE_UNITS = {"embedding": "text", "fitting": "booster"}


def stage_bars(prefix: str = ""):
    """A progress bar per stage of a text-predictor fit, each opened when its stage reports first."""
    bars: dict = {}

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            label = f"{prefix}{stage}"
            bars[stage] = progress_bar(total, label, unit=TEXT_PREDICTOR_STAGE_UNITS.get(stage, "step"))
        bars[stage](done, total)

    return on_stage
