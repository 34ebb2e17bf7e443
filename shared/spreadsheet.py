"""Cells safe to open in a spreadsheet: OWASP's advice on CSV injection, in one function every CSV writer uses.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a formula (and a leading tab or carriage return
can hide one): a model name such as `=HYPERLINK("http://…")` in leaderboard.csv would run on the reader's machine.
Such a cell gets a leading single quote, which makes the spreadsheet show it as text; a number (`-1.5`, `+3`,
`-2e-3`) is left alone. The quote is the only change, and a cell that needs none is written as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(value: object) -> object:
    """`value` as a CSV cell a spreadsheet will not run: a string starting like a formula gets a leading `'`.

    Numbers (and strings that are plain numbers) and every other value pass unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and _NUMBER.fullmatch(value) is None:
        return "'" + value
    return value


def safe_row(cells: Iterable[object]) -> list[object]:
    """safe_cell of every cell of a row, for csv.writer.writerow."""
    return [safe_cell(cell) for cell in cells]
