"""Validation splits grouped by prompt (several sources repeat a prompt with different responses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shared.arena_csv import LABEL_COLUMNS, read_arena_csv
from shared.storage import atomic_writer
from workers.common.pairs import prompt_groups


def holdout_mask(groups: np.ndarray, *, holdout_fraction: float, seed: int) -> np.ndarray:
    """Deterministic: a prompt group lands in the holdout when its seeded hash falls below the fraction."""
    mixed = (groups.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)) % np.uint64(1_000_003)
    return mixed < np.uint64(int(holdout_fraction * 1_000_003))


def split_file(input_path: Path, output_dir: Path, *, holdout_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write train.csv, holdout.csv (labelled) and holdout_test.csv (Kaggle test format) to `output_dir`."""
    dataset = read_arena_csv(input_path, require_labels=True)
    frame = pd.read_csv(input_path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace")
    mask = holdout_mask(prompt_groups(dataset.pairs), holdout_fraction=holdout_fraction, seed=seed)
    test_columns = [column for column in frame.columns if column not in (*LABEL_COLUMNS, "source")]
    outputs = {
        "train.csv": frame[~mask],
        "holdout.csv": frame[mask],
        "holdout_test.csv": frame[mask][test_columns],
    }
    output_dir = Path(output_dir)
    for name, part in outputs.items():
        with atomic_writer(output_dir / name, "w", encoding="utf-8", newline="") as handle:
            part.to_csv(handle, index=False)
    return {name: len(part) for name, part in outputs.items()}
