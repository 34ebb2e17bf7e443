"""Per-row labels (sources, model names) as integer codes: grouping in O(rows), whatever the number of distinct
labels or their length. numpy's fixed-width strings cost rows × the longest label, and a mask per label costs
rows × labels; codes from a hash table cost neither."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Groups:
    """Rows grouped by label: `codes[row]` indexes `names` (largest group first); `counts` are rows per group."""

    codes: np.ndarray
    names: list[str]
    counts: np.ndarray
    note: str | None = None  # set when labels past the cap were folded into the last group


def factorize(values: Sequence[object], *, sort: bool = False) -> tuple[np.ndarray, list[str]]:
    """Integer codes of `values` and the distinct values (in first-seen order, or sorted with `sort`), in O(rows)."""
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(values, dtype=object), sort=sort)
    return codes.astype(np.int64, copy=False), [str(value) for value in uniques]


def top_groups(values: Sequence[object], *, max_groups: int, what: str = "sources") -> Groups:
    """The `max_groups` largest groups of `values` (ties by name), the rest folded into one `(other N …)` group.

    Args:
        values: one label per row.
        max_groups: groups kept by name; the folded group comes on top of them.
        what: what the labels are, for the folded group's name and the note.
    """
    codes, names = factorize(values)
    counts = np.bincount(codes, minlength=len(names))
    order = sorted(range(len(names)), key=lambda index: (-counts[index], names[index]))
    if len(order) <= max_groups:
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return Groups(codes=rank[codes], names=[names[index] for index in order], counts=counts[order])
    kept, folded = order[:max_groups], order[max_groups:]
    rank = np.full(len(names), max_groups, dtype=np.int64)
    rank[kept] = np.arange(max_groups)
    other = f"(other {len(folded):,} {what})"
    kept_names = {names[index] for index in kept}
    while other in kept_names:  # a label of the file may read the same: a trailing space keeps the two apart
        other += " "
    folded_rows = int(counts[folded].sum())
    note = (
        f"{len(names):,} distinct {what}, over the cap of {max_groups:,}: the {max_groups:,} largest are shown and"
        f" the other {len(folded):,} ({folded_rows:,} rows) are grouped as {other!r}"
    )
    return Groups(
        codes=rank[codes],
        names=[names[index] for index in kept] + [other],
        counts=np.append(counts[kept], folded_rows),
        note=note,
    )
