"""Validation splits grouped by prompt (several sources repeat a prompt with different responses)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from shared.arena_csv import LABEL_COLUMNS, read_arena_csv, read_arena_table
from shared.spreadsheet import safe_row
from shared.storage import atomic_writer
from workers.common.pairs import prompt_groups


def holdout_mask(groups: np.ndarray, *, holdout_fraction: float, seed: int) -> np.ndarray:
    """Deterministic: a prompt group lands in the holdout when its seeded hash falls below the fraction."""
    mixed = (groups.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)) % np.uint64(1_000_003)
    return mixed < np.uint64(int(holdout_fraction * 1_000_003))


def split_file(input_path: Path, output_dir: Path, *, holdout_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write train.csv, holdout.csv (labelled) and holdout_test.csv (Kaggle test format) to `output_dir`."""
    dataset = read_arena_csv(input_path, require_labels=True)
    # The rows as the one arena reader reads them (not a second CSV parser that could see other rows).
    columns, records = read_arena_table(input_path)
    mask = holdout_mask(prompt_groups(dataset.pairs), holdout_fraction=holdout_fraction, seed=seed)
    test_columns = [index for index, column in enumerate(columns) if column not in (*LABEL_COLUMNS, "source")]
    outputs = {
        "train.csv": (columns, [record for record, held in zip(records, mask, strict=True) if not held]),
        "holdout.csv": (columns, [record for record, held in zip(records, mask, strict=True) if held]),
        "holdout_test.csv": (
            [columns[index] for index in test_columns],
            [[record[index] for index in test_columns] for record, held in zip(records, mask, strict=True) if held],
        ),
    }
    output_dir = Path(output_dir)
    for name, (header, rows) in outputs.items():
        with atomic_writer(output_dir / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(safe_row(header))
            writer.writerows(safe_row(row) for row in rows)
    return {name: len(rows) for name, (_, rows) in outputs.items()}
