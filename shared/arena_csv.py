"""Kaggle LMSYS arena CSVs in, Kaggle submission CSVs out."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shared.errors import UserError
from shared.storage import atomic_writer

REQUIRED_COLUMNS = ("id", "prompt", "response_a", "response_b")
LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
SUBMISSION_COLUMNS = ("id", *LABEL_COLUMNS)
TURN_COLUMNS = ("prompt", "response_a", "response_b")


class DataFormatError(UserError, ValueError):
    """The input file does not follow the Kaggle arena schema; the message says what to fix."""


@dataclass(frozen=True)
class Pair:
    """One comparison: a conversation (user turns) and the two assistants' turns."""

    id: str
    prompt: tuple[str, ...]
    response_a: tuple[str, ...]
    response_b: tuple[str, ...]

    def swapped(self) -> Pair:
        return Pair(self.id, self.prompt, self.response_b, self.response_a)


@dataclass
class ArenaDataset:
    pairs: list[Pair]
    labels: np.ndarray | None = None  # (n, 3) probabilities for (A, B, tie); None for a test file
    sources: list[str] | None = None  # the optional `source` column, for per-source figures
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [pair.id for pair in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def head(self, limit: int | None) -> ArenaDataset:
        if limit is None or limit >= len(self.pairs):
            return self
        return ArenaDataset(
            pairs=self.pairs[:limit],
            labels=None if self.labels is None else self.labels[:limit],
            sources=None if self.sources is None else self.sources[:limit],
        )


def clean_text(text: str) -> str:
    """Repair lone UTF-16 surrogates (they exist in the real Kaggle file) so the text encodes as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def parse_turns(cell: str, *, row: int, column: str, row_id: str) -> tuple[str, ...]:
    where = f"row {row} (id={row_id!r}), column {column!r}"
    try:
        value = json.loads(cell)
    except RecursionError:
        # Deep nesting ("[[[[…") exhausts the parser's recursion limit; turns are never nested anyway.
        raise DataFormatError(
            f'{where}: JSON nested too deeply; expected a flat JSON list of strings such as ["Hello?"]'
        ) from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataFormatError(
            f"{where}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
            'each turn column must hold a JSON list of strings, e.g. ["Hello?"]'
        ) from None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataFormatError(
            f'{where}: expected a JSON list of strings such as ["Hello?"], got {type(value).__name__}'
        )
    turns = []
    for turn in value:
        if turn is None:
            turns.append("")
        elif isinstance(turn, str):
            turns.append(clean_text(turn))
        else:
            raise DataFormatError(
                f"{where}: turns must be strings or null, found {type(turn).__name__}; expected a flat JSON list"
                ' of strings such as ["Hello?"] (no nested lists or objects)'
            )
    return tuple(turns)


def _read_frame(source: Path | str | bytes) -> pd.DataFrame:
    if isinstance(source, bytes):
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataFormatError(f"{path}: no such file; pass the path of a Kaggle-format CSV")
        if path.stat().st_size == 0:
            raise DataFormatError(
                f"{path}: the file is empty; expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}"
            )
        handle = path
    try:
        return pd.read_csv(handle, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"the file is empty; expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}") from None
    except (pd.errors.ParserError, csv.Error, UnicodeDecodeError) as exc:
        raise DataFormatError(f"not a readable CSV: {str(exc).strip()}; check quoting and delimiters") from None


def _parse_labels(frame: pd.DataFrame, ids: list[str]) -> np.ndarray | None:
    present = [column for column in LABEL_COLUMNS if column in frame.columns]
    if not present:
        return None
    if len(present) != len(LABEL_COLUMNS):
        missing = [column for column in LABEL_COLUMNS if column not in frame.columns]
        raise DataFormatError(
            f"label columns are incomplete: missing {missing}; give all of {list(LABEL_COLUMNS)} or none"
        )
    labels = np.zeros((len(frame), 3))
    for column_index, column in enumerate(LABEL_COLUMNS):
        for row_index, cell in enumerate(frame[column].tolist()):
            try:
                labels[row_index, column_index] = float(cell)
            except ValueError:
                raise DataFormatError(
                    f"row {row_index + 1} (id={ids[row_index]!r}), column {column!r}: {cell!r} is not a number; use 0/1"
                    " or a probability"
                ) from None
    # "nan" parses as a float and fails no comparison: it must be refused explicitly, or it reaches training.
    finite = np.isfinite(labels).all(axis=1)
    bad = np.flatnonzero(~finite | (labels < 0).any(axis=1) | (np.abs(labels.sum(axis=1) - 1.0) > 1e-3))
    if bad.size:
        row_index = int(bad[0])
        raise DataFormatError(
            f"row {row_index + 1} (id={ids[row_index]!r}): winner_model_a, winner_model_b and winner_tie must be"
            f" finite, non-negative and sum to 1, got {labels[row_index].tolist()} ({bad.size} such rows)"
        )
    return labels


def _check_cell_sizes(frame: pd.DataFrame, *, max_cell_bytes: int) -> None:
    """Refuse any cell over `max_cell_bytes` (UTF-8), naming its row and column but never echoing it."""
    for column in frame.columns:
        values = frame[column]
        # A character is at most 4 UTF-8 bytes: only cells that long can be over the cap, and only those are encoded.
        for row_index in np.flatnonzero(values.str.len().to_numpy() * 4 > max_cell_bytes):
            size = len(values.iat[row_index].encode("utf-8", "surrogatepass"))
            if size > max_cell_bytes:
                raise DataFormatError(
                    f"row {row_index + 1}, column {str(column)[:64]!r}: the cell holds {size:,} bytes, over the"
                    f" {max_cell_bytes:,}-byte cap (MAX_CELL_BYTES); shorten it or drop the row"
                )


def read_arena_csv(
    source: Path | str | bytes, *, require_labels: bool = False, max_cell_bytes: int | None = None
) -> ArenaDataset:
    """Read and validate a Kaggle arena train/test CSV.

    Args:
        source: a file path, or the raw CSV bytes.
        require_labels: fail unless the three winner columns are present.
        max_cell_bytes: refuse a file with a larger cell (the gateway passes MAX_CELL_BYTES); None: no cap.

    Returns:
        The parsed dataset, with labels when the winner columns exist.

    Raises:
        DataFormatError: the message names the row and column to fix.
    """
    frame = _read_frame(source)
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataFormatError(
            f"missing column(s) {missing}; a Kaggle arena CSV needs {list(REQUIRED_COLUMNS)}"
            f" (found {list(frame.columns)[:12]})"
        )
    if len(frame) == 0:
        raise DataFormatError("the CSV has a header but no rows")
    if max_cell_bytes is not None:
        _check_cell_sizes(frame, max_cell_bytes=max_cell_bytes)
    ids = [str(value).strip() for value in frame["id"].tolist()]
    for row_index, row_id in enumerate(ids):
        if not row_id:
            raise DataFormatError(f"row {row_index + 1}: column 'id' is empty; every row needs a unique id")
    duplicated = pd.Series(ids)[pd.Series(ids).duplicated()].tolist()
    if duplicated:
        raise DataFormatError(f"duplicate id(s) {duplicated[:5]}; ids must be unique")
    columns = {column: frame[column].tolist() for column in TURN_COLUMNS}
    pairs = [
        Pair(
            id=row_id,
            **{
                column: parse_turns(columns[column][row_index], row=row_index + 1, column=column, row_id=row_id)
                for column in TURN_COLUMNS
            },
        )
        for row_index, row_id in enumerate(ids)
    ]
    labels = _parse_labels(frame, ids)
    if require_labels and labels is None:
        raise DataFormatError(f"this command needs labelled data: add the columns {list(LABEL_COLUMNS)}")
    sources = frame["source"].tolist() if "source" in frame.columns else None
    return ArenaDataset(pairs=pairs, labels=labels, sources=sources)


def normalise_probabilities(probabilities: np.ndarray, *, floor: float) -> np.ndarray:
    """Clip away from 0 and renormalise so every row sums to 1."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = np.where(np.isfinite(probabilities), probabilities, 0.0)
    clipped = np.clip(probabilities, floor, None)
    return clipped / clipped.sum(axis=1, keepdims=True)


def write_submission(path: Path, ids: list[str], probabilities: np.ndarray, *, floor: float = 1e-4) -> Path:
    """Write `id,winner_model_a,winner_model_b,winner_tie`, one row per id, in the given order, atomically."""
    if len(ids) != len(probabilities):
        raise ValueError(f"{len(ids)} ids but {len(probabilities)} probability rows")
    probabilities = normalise_probabilities(probabilities, floor=floor)
    with atomic_writer(Path(path), "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUBMISSION_COLUMNS)
        for row_id, row in zip(ids, probabilities, strict=True):
            writer.writerow([row_id, *(f"{value:.6f}" for value in row)])
    return Path(path)


def read_submission(path: Path, *, expected_ids: list[str] | None = None) -> np.ndarray:
    """Read a submission back as an (n, 3) array, aligned to `expected_ids` when given."""
    frame = _read_frame(Path(path))
    missing = [column for column in SUBMISSION_COLUMNS if column not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; a submission has {list(SUBMISSION_COLUMNS)}")
    frame["id"] = frame["id"].astype(str).str.strip()
    try:
        values = frame[list(LABEL_COLUMNS)].astype(float)
    except ValueError as exc:
        raise DataFormatError(f"{path}: probabilities must be numbers ({exc})") from None
    values.index = frame["id"]
    if expected_ids is None:
        return values.to_numpy()
    absent = [row_id for row_id in expected_ids if row_id not in values.index]
    if absent:
        raise DataFormatError(f"{path}: {len(absent)} id(s) of the labelled file have no prediction, e.g. {absent[:3]}")
    return values.loc[expected_ids].to_numpy()
