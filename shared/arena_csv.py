"""Kaggle LMSYS arena CSVs in, Kaggle submission CSVs out."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from shared.errors import UserError
from shared.spreadsheet import safe_cell
from shared.storage import atomic_writer

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("id", "prompt", "response_a", "response_b")
LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
SUBMISSION_COLUMNS = ("id", *LABEL_COLUMNS)
TURN_COLUMNS = ("prompt", "response_a", "response_b")
# Labels, not text: shown in figures, leaderboards and per-source tables, so capped in length (MAX_NAME_CHARS).
NAME_COLUMNS = ("model_a", "model_b", "source")


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
    # Kaggle train.csv's `model_a` / `model_b` (stripped; "" where a row names none); None without both columns.
    models_a: list[str] | None = None
    models_b: list[str] | None = None

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
            models_a=None if self.models_a is None else self.models_a[:limit],
            models_b=None if self.models_b is None else self.models_b[:limit],
        )


def clean_text(text: str) -> str:
    """Repair lone UTF-16 surrogates (they exist in the real Kaggle file) so the text encodes as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def short(text: str, limit: int = 40) -> str:
    """`text` as repr, cut to about `limit` characters: error messages name an id or column, never echo a cell."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def parse_turns(cell: str, *, row: int, column: str, row_id: str) -> tuple[str, ...]:
    def where() -> str:  # built only for an error: this runs three times per row
        return f"row {row} (id={short(row_id)}), column {column!r}"

    try:
        value = json.loads(cell)
    except RecursionError:
        # Deep nesting ("[[[[…") exhausts the parser's recursion limit; turns are never nested anyway.
        raise DataFormatError(
            f'{where()}: JSON nested too deeply; expected a flat JSON list of strings such as ["Hello?"]'
        ) from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataFormatError(
            f"{where()}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
            'each turn column must hold a JSON list of strings, e.g. ["Hello?"]'
        ) from None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataFormatError(
            f'{where()}: expected a JSON list of strings such as ["Hello?"], got {type(value).__name__}'
        )
    turns = []
    for turn in value:
        if turn is None:
            turns.append("")
        elif isinstance(turn, str):
            turns.append(clean_text(turn))
        else:
            raise DataFormatError(
                f"{where()}: turns must be strings or null, found {type(turn).__name__}; expected a flat JSON list"
                ' of strings such as ["Hello?"] (no nested lists or objects)'
            )
    return tuple(turns)


_scan_json = json.JSONDecoder().scan_once  # json.loads without its Python layers: 1/9 of the time on "[]"
_JSON_SPACE = " \t\n\r"


def _are_turn_cells(cells: Iterable[str]) -> bool:
    """True when parse_turns would accept every cell (a JSON string, or a list of strings and nulls); False: call
    parse_turns for the error. The upload check's fast path: json.loads was most of a row's cost."""
    for cell in cells:
        start = len(cell) - len(cell.lstrip(_JSON_SPACE))
        try:
            value, end = _scan_json(cell, start)
        except (StopIteration, ValueError, RecursionError):
            return False
        if end != len(cell) and cell[end:].strip(_JSON_SPACE):
            return False
        if isinstance(value, list):
            if value and not all(turn is None or isinstance(turn, str) for turn in value):
                return False
        elif not isinstance(value, str):
            return False
    return True


def _existing_csv(source: Path | str) -> Path:
    """The path of a CSV to read, refused with what to pass when it is missing or empty."""
    path = Path(source)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file; pass the path of a Kaggle-format CSV")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty; expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}")
    return path


def _read_frame(source: Path | str | bytes) -> pd.DataFrame:
    # Imported here: the gateway validates uploads with check_arena_csv and never needs pandas.
    import pandas as pd

    handle = io.BytesIO(source) if isinstance(source, bytes) else _existing_csv(source)
    try:
        return pd.read_csv(handle, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"the file is empty; expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}") from None
    except (pd.errors.ParserError, csv.Error, UnicodeDecodeError) as exc:
        raise DataFormatError(f"not a readable CSV: {str(exc).strip()}; check quoting and delimiters") from None


def normalise_columns(names: Iterable[object]) -> list[str]:
    """Column names as every reader compares them: surrounding spaces removed.

    Raises:
        DataFormatError: two names are the same once normalised (blank names, never read, may repeat).
    """
    columns = [str(name).strip() for name in names]
    seen: set[str] = set()
    for column in columns:
        if column and column in seen:
            raise DataFormatError(
                f"duplicate column {short(column)} (names are compared without surrounding spaces); rename or drop"
                " one of them"
            )
        seen.add(column)
    return columns


def _check_required_columns(columns: list[str]) -> bool:
    """Refuse a header without the required columns or with only some label columns; True when labelled."""
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        found = ", ".join(short(column, 24) for column in columns[:8]) + (", …" if len(columns) > 8 else "")
        raise DataFormatError(
            f"missing column(s) {missing}; a Kaggle arena CSV needs {list(REQUIRED_COLUMNS)} (found {found})"
        )
    present = [column for column in LABEL_COLUMNS if column in columns]
    if present and len(present) != len(LABEL_COLUMNS):
        missing = [column for column in LABEL_COLUMNS if column not in columns]
        raise DataFormatError(
            f"label columns are incomplete: missing {missing}; give all of {list(LABEL_COLUMNS)} or none"
        )
    return bool(present)


def _label_value(cell: str, *, row: int, column: str, row_id: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DataFormatError(
            f"row {row} (id={short(row_id)}), column {column!r}: {short(cell, 24)} is not a number; use 0/1 or a"
            " probability"
        ) from None


def _bad_labels_error(values: list[float], *, row: int, row_id: str, count: str = "") -> DataFormatError:
    return DataFormatError(
        f"row {row} (id={short(row_id)}): winner_model_a, winner_model_b and winner_tie must be finite,"
        f" non-negative and sum to 1, got {values}{count}"
    )


def _cell_too_large_error(*, row: int, column: str | None, size: str, max_cell_bytes: int) -> DataFormatError:
    where = f"row {row}" if column is None else f"row {row}, column {short(column)}"
    return DataFormatError(
        f"{where}: the cell holds {size} bytes, over the {max_cell_bytes:,}-byte cap (MAX_CELL_BYTES); shorten it"
        " or drop the row"
    )


NO_ROWS = "the CSV has a header but no rows"
EMPTY_ID = "row {row}: column 'id' is empty; every row needs a unique id"
DUPLICATE_IDS = "duplicate id(s) {ids}; ids must be unique"
# A header longer than this many characters per allowed column is refused before csv splits it into fields.
HEADER_CHARS_PER_COLUMN = 1024


class CsvLimitError(DataFormatError):
    """The file passes one of the gateway's size caps (MAX_UPLOAD_ROWS, MAX_UPLOAD_COLUMNS); the message names it."""


@dataclass(frozen=True)
class CsvSummary:
    rows: int
    labelled: bool
    model_names: bool = False


class _RecordTooLongError(Exception):
    pass


class _RecordLines:
    """The physical lines of a text file for csv.reader, refusing a record (one row, maybe several lines) longer
    than `limit` characters before csv splits it: a line of a million commas would be a list of a million fields.
    The caller sets `record_chars` to 0 after each record the reader yields."""

    def __init__(self, handle: TextIO, *, limit: int | None) -> None:
        self.handle = handle
        self.limit = limit
        self.record_chars = 0
        self.overflow = ""  # the start of the line that passed the limit

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = (
            self.handle.readline() if self.limit is None else self.handle.readline(self.limit + 1 - self.record_chars)
        )
        if not line:
            raise StopIteration
        self.record_chars += len(line)
        if self.limit is not None and self.record_chars > self.limit:
            self.overflow = line
            raise _RecordTooLongError
        return line


def _records(handle: TextIO, *, max_columns: int | None, max_cell_bytes: int | None) -> Iterator[tuple[int, list[str]]]:
    """(0, header), then (row number, fields) for each non-blank row, each row as wide as the header.

    Memory is bounded by one record: a header over `max_columns` * HEADER_CHARS_PER_COLUMN characters, a row over
    what its columns can hold at `max_cell_bytes` each and a field over `max_cell_bytes` characters are refused
    while they are read.
    """
    lines = _RecordLines(handle, limit=None if max_columns is None else max_columns * HEADER_CHARS_PER_COLUMN)
    reader = csv.reader(lines, strict=True)
    row = 0
    width = 0
    try:
        for record in reader:
            lines.record_chars = 0
            # pandas skips blank (and all-space) lines too: the two readers must count the same rows.
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if width == 0:
                width = len(record)
                if max_columns is not None and width > max_columns:
                    raise _too_many_columns(f"{width:,}", max_columns)
                _check_utf8(record, row=0)
                yield 0, record
                # A quoted cell of max_cell_bytes doubles its quotes at most; 3 more for quotes and comma.
                lines.limit = None if max_cell_bytes is None else width * (2 * max_cell_bytes + 3) + 2
                continue
            row += 1
            if len(record) != width:
                raise DataFormatError(
                    f"row {row} has {len(record):,} fields, the header has {width:,}; quote every cell that holds a"
                    " comma, a quote or a newline, and double the quotes inside it"
                )
            _check_utf8(record, row=row)
            yield row, record
    except _RecordTooLongError:
        if width == 0:
            # The header so far (within the limit) gives a lower bound of its width.
            fields = next(csv.reader([lines.overflow.rstrip("\r\n")]), [])
            count = f"more than {len(fields) - 1:,}" if len(fields) - 1 > (max_columns or 0) else "too many"
            raise _too_many_columns(count, max_columns or 0) from None
        raise DataFormatError(
            f"row {row + 1} is over {lines.limit:,} characters, more than {width} cells of the {max_cell_bytes:,}-byte"
            " cap (MAX_CELL_BYTES) can hold; shorten it"
        ) from None
    except csv.Error as exc:
        if "field larger than field limit" in str(exc) and max_cell_bytes is not None:
            raise _cell_too_large_error(
                row=row + 1, column=None, size=f"over {max_cell_bytes:,}", max_cell_bytes=max_cell_bytes
            ) from None
        where = "in the header" if width == 0 else f"at row {row + 1}"
        raise DataFormatError(f"not a readable CSV {where}: {str(exc)[:100]}; check quoting and delimiters") from None


# Bytes that are not UTF-8 decode (errors="surrogateescape") to U+DC80..U+DCFF, which valid UTF-8 never yields.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _check_utf8(record: list[str], *, row: int) -> None:
    """Refuse a record holding bytes that are not UTF-8, naming its row and column (never replaced silently)."""
    for index, cell in enumerate(record):
        if _NOT_UTF8.search(cell) is not None:
            where = "the header" if row == 0 else f"row {row}"
            raise DataFormatError(
                f"{where}, column {index + 1}: bytes that are not UTF-8; save the file as UTF-8 (in a spreadsheet:"
                " 'CSV UTF-8')"
            )


def _open_text(source: Path | bytes) -> TextIO:
    """The CSV as text for _records: UTF-8 (a BOM skipped), invalid bytes kept as escapes for _check_utf8."""
    if isinstance(source, bytes):
        return io.TextIOWrapper(io.BytesIO(source), encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(source, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _too_many_columns(count: str, max_columns: int) -> CsvLimitError:
    return CsvLimitError(
        f"the header has {count} columns, over the {max_columns:,}-column cap (MAX_UPLOAD_COLUMNS); a Kaggle arena"
        f" CSV needs {', '.join(REQUIRED_COLUMNS)}, the three winner columns and little else"
    )


@dataclass
class _ArenaRow:
    """One validated data row: its number (1-based, blank lines not counted), id and cells."""

    number: int
    id: str
    record: list[str]
    turns: tuple[tuple[str, ...], ...] | None  # (prompt, response_a, response_b) when parsed
    labels: list[float] | None


@dataclass
class _ArenaHeader:
    columns: list[str]
    labelled: bool


def _arena_rows(
    handle: TextIO,
    *,
    max_rows: int | None,
    max_columns: int | None,
    max_cell_bytes: int | None,
    max_name_chars: int | None,
    parse_turns_too: bool,
) -> Iterator[_ArenaHeader | _ArenaRow]:
    """The one reader of arena CSVs: the header (checked before any row), then each row, validated as it is read.

    The upload check and the workers' reader both take their rows from here, so what one accepts the other reads,
    with the same rows, and both refuse the same files with the same message. Checks: column count, duplicate
    names, required and label columns; per row its width, cell sizes, bytes that are not UTF-8, id, turns, labels
    and name lengths. Duplicate ids are the caller's (the check bounds its memory, the reader holds every id).
    """
    records = _records(handle, max_columns=max_columns, max_cell_bytes=max_cell_bytes)
    header = next(records, None)
    if header is None:
        raise DataFormatError(f"the file is empty; expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}")
    columns = normalise_columns(header[1])
    labelled = _check_required_columns(columns)
    yield _ArenaHeader(columns=columns, labelled=labelled)
    id_index = columns.index("id")
    turn_indices = [(column, columns.index(column)) for column in TURN_COLUMNS]
    label_indices = [(column, columns.index(column)) for column in LABEL_COLUMNS] if labelled else []
    name_indices = [] if max_name_chars is None else [(c, columns.index(c)) for c in NAME_COLUMNS if c in columns]
    turn_cells = itemgetter(*(index for _, index in turn_indices))
    row_cap = sys.maxsize if max_rows is None else max_rows
    # A character is at most 4 UTF-8 bytes: only cells longer than this can be over the cap; only those are encoded.
    long_cell = sys.maxsize if max_cell_bytes is None else max_cell_bytes // 4
    for number, record in records:
        if number > row_cap:
            raise CsvLimitError(
                f"the file has more than {max_rows:,} rows, over the row cap (MAX_UPLOAD_ROWS); split it"
            )
        if max_cell_bytes is not None and max(map(len, record)) > long_cell:
            for column, cell in zip(columns, record, strict=True):
                size = len(cell.encode("utf-8", "surrogatepass"))
                if size > max_cell_bytes:
                    raise _cell_too_large_error(
                        row=number, column=column, size=f"{size:,}", max_cell_bytes=max_cell_bytes
                    )
        row_id = record[id_index].strip()
        if not row_id:
            raise DataFormatError(EMPTY_ID.format(row=number))
        turns = None
        if parse_turns_too:
            turns = tuple(
                parse_turns(record[index], row=number, column=column, row_id=row_id) for column, index in turn_indices
            )
        elif not _are_turn_cells(turn_cells(record)):
            for column, index in turn_indices:
                parse_turns(record[index], row=number, column=column, row_id=row_id)  # raises the row's error
        labels = None
        if label_indices:
            labels = [
                _label_value(record[index], row=number, column=column, row_id=row_id) for column, index in label_indices
            ]
            # "nan" fails no comparison: refused by the isfinite check.
            if not all(map(math.isfinite, labels)) or min(labels) < 0 or abs(sum(labels) - 1.0) > 1e-3:
                raise _bad_labels_error(labels, row=number, row_id=row_id)
        for column, index in name_indices:
            if len(record[index].strip()) > max_name_chars:
                raise DataFormatError(
                    f"row {number} (id={short(row_id)}), column {column!r}: {len(record[index].strip()):,}"
                    f" characters, over the {max_name_chars:,}-character cap of a name (MAX_NAME_CHARS); shorten it"
                )
        yield _ArenaRow(number=number, id=row_id, record=record, turns=turns, labels=labels)


def _set_field_limit(max_cell_bytes: int | None) -> None:
    # The limit is csv's, for the whole process: only ever raised here, so that no thread lowers it under another.
    field_limit = sys.maxsize if max_cell_bytes is None else max_cell_bytes
    if csv.field_size_limit() < field_limit:
        csv.field_size_limit(field_limit)


def check_arena_csv(
    path: Path,
    *,
    max_rows: int | None = None,
    max_columns: int | None = None,
    max_cell_bytes: int | None = None,
    max_name_chars: int | None = None,
) -> CsvSummary:
    """Validate a Kaggle arena CSV as read_arena_csv reads it (the same reader, _arena_rows), streaming, in memory
    bounded whatever the file: one row, and 8 bytes per row (a hash of its id, for the duplicate check).

    Args:
        path: the CSV file.
        max_rows: refuse more data rows (MAX_UPLOAD_ROWS); None: no cap.
        max_columns: refuse a wider header (MAX_UPLOAD_COLUMNS); None: no cap.
        max_cell_bytes: refuse a larger cell (MAX_CELL_BYTES); None: no cap.
        max_name_chars: refuse a longer model_a, model_b or source value (MAX_NAME_CHARS); None: no cap.

    Returns:
        The number of rows, and whether the winner columns are there.

    Raises:
        CsvLimitError: over `max_rows` or `max_columns`.
        DataFormatError: not a Kaggle arena CSV; the message names the row and column to fix.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataFormatError(f"the file is empty; expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}")
    _set_field_limit(max_cell_bytes)
    id_hashes = array("q")
    with _open_text(path) as handle:
        rows = _arena_rows(
            handle, max_rows=max_rows, max_columns=max_columns, max_cell_bytes=max_cell_bytes,
            max_name_chars=max_name_chars, parse_turns_too=False,
        )  # fmt: skip
        header = next(rows)
        count = 0
        for row in rows:
            count = row.number
            id_hashes.append(hash(row.id))
    if count == 0:
        raise DataFormatError(NO_ROWS)
    _check_unique_ids(path, id_hashes, id_index=header.columns.index("id"), max_cell_bytes=max_cell_bytes)
    return CsvSummary(rows=count, labelled=header.labelled, model_names={"model_a", "model_b"} <= set(header.columns))


def _check_unique_ids(path: Path, id_hashes: array, *, id_index: int, max_cell_bytes: int | None) -> None:
    """Refuse repeated ids. Equal hashes are only candidates: the file is read again for those ids alone."""
    hashes = np.sort(np.frombuffer(id_hashes, dtype=np.int64))
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    if not repeated:
        return
    seen: set[str] = set()
    duplicated: list[str] = []
    with _open_text(path) as handle:
        records = _records(handle, max_columns=None, max_cell_bytes=max_cell_bytes)
        next(records)
        for _, record in records:
            row_id = record[id_index].strip()
            if hash(row_id) in repeated:
                if row_id in seen:
                    duplicated.append(row_id)
                    if len(duplicated) == 5:
                        break
                seen.add(row_id)
    if duplicated:
        raise DataFormatError(DUPLICATE_IDS.format(ids=", ".join(short(row_id) for row_id in duplicated)))


def read_arena_csv(
    source: Path | str | bytes, *, require_labels: bool = False, max_cell_bytes: int | None = None
) -> ArenaDataset:
    """Read and validate a Kaggle arena train/test CSV, with the upload check's reader (_arena_rows).

    Args:
        source: a file path, or the raw CSV bytes.
        require_labels: fail unless the three winner columns are present.
        max_cell_bytes: refuse a file with a larger cell (the gateway passes MAX_CELL_BYTES); None: no cap.

    Returns:
        The parsed dataset, with labels when the winner columns exist.

    Raises:
        DataFormatError: the message names the row and column to fix.
    """
    if not isinstance(source, bytes):
        source = _existing_csv(source)
    _set_field_limit(max_cell_bytes)
    with _open_text(source) as handle:
        rows = _arena_rows(
            handle, max_rows=None, max_columns=None, max_cell_bytes=max_cell_bytes, max_name_chars=None,
            parse_turns_too=True,
        )  # fmt: skip
        header = next(rows)
        parsed = list(rows)
    if not parsed:
        raise DataFormatError(NO_ROWS)
    seen: set[str] = set()
    duplicated = [row.id for row in parsed if row.id in seen or seen.add(row.id)]
    if duplicated:
        raise DataFormatError(DUPLICATE_IDS.format(ids=", ".join(short(row_id) for row_id in duplicated[:5])))
    if require_labels and not header.labelled:
        raise DataFormatError(f"this command needs labelled data: add the columns {list(LABEL_COLUMNS)}")
    columns = header.columns

    def column_values(name: str) -> list[str] | None:
        if name not in columns:
            return None
        index = columns.index(name)
        return [row.record[index] for row in parsed]

    models_a, models_b = column_values("model_a"), column_values("model_b")
    if models_a is None or models_b is None:
        models_a = models_b = None
    else:
        models_a = [name.strip() for name in models_a]
        models_b = [name.strip() for name in models_b]
    return ArenaDataset(
        pairs=[Pair(row.id, *row.turns) for row in parsed],
        labels=np.array([row.labels for row in parsed], dtype=np.float64) if header.labelled else None,
        sources=column_values("source"),
        models_a=models_a,
        models_b=models_b,
    )


def read_arena_table(source: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the rows' cells of an arena CSV as read_arena_csv reads them (validated), for a tool that
    writes the same rows out again (workers/training/splits.py)."""
    _set_field_limit(None)
    with _open_text(Path(source)) as handle:
        rows = _arena_rows(
            handle, max_rows=None, max_columns=None, max_cell_bytes=None, max_name_chars=None, parse_turns_too=False
        )
        header = next(rows)
        return header.columns, [row.record for row in rows]


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
            writer.writerow([safe_cell(row_id), *(f"{value:.6f}" for value in row)])
    return Path(path)


def read_submission(path: Path, *, expected_ids: list[str] | None = None, exact: bool = False) -> np.ndarray:
    """Read a submission back as an (n, 3) array, aligned to `expected_ids` when given.

    Args:
        path: the submission CSV.
        expected_ids: the ids of the file it predicts, in that file's order; each must have one row.
        exact: with `expected_ids`, also refuse rows whose id is not among them (a submission for another file).

    Raises:
        DataFormatError: missing columns, non-numbers, repeated ids, or ids that do not match; the message says which.
    """
    frame = _read_frame(Path(path))
    missing = [column for column in SUBMISSION_COLUMNS if column not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; a submission has {list(SUBMISSION_COLUMNS)}")
    # Matched as written: an id a spreadsheet would run was written with a leading quote (safe_cell), both sides
    # are compared in that form.
    frame["id"] = frame["id"].astype(str).str.strip().map(safe_cell)
    expected_ids = None if expected_ids is None else [safe_cell(row_id) for row_id in expected_ids]
    try:
        values = frame[list(LABEL_COLUMNS)].astype(float)
    except ValueError as exc:
        raise DataFormatError(f"{path}: probabilities must be numbers ({exc})") from None
    values.index = frame["id"]
    if expected_ids is None:
        return values.to_numpy()
    repeated = frame["id"][frame["id"].duplicated()].unique().tolist()
    if repeated:
        raise DataFormatError(
            f"{path}: {len(repeated)} id(s) have more than one row, e.g."
            f" {', '.join(short(row_id) for row_id in repeated[:3])}; a submission has one row per id"
        )
    absent = [row_id for row_id in expected_ids if row_id not in values.index]
    if absent:
        raise DataFormatError(f"{path}: {len(absent)} id(s) of the labelled file have no prediction, e.g. {absent[:3]}")
    if exact:
        expected = set(expected_ids)
        unknown = [row_id for row_id in values.index if row_id not in expected]
        if unknown:
            examples = ", ".join(short(row_id) for row_id in unknown[:3])
            raise DataFormatError(
                f"{path}: {len(unknown)} id(s) are not in the input file, e.g. {examples}; the submission must be the"
                " prediction of this very file"
            )
    return values.loc[expected_ids].to_numpy()
