"""What a pair's text gives without any model: length features, and the prompt group a split keeps together."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from shared.arena_csv import Pair


def _text_length(turns: tuple[str, ...]) -> int:
    return sum(len(turn) for turn in turns)


def length_features(pairs: Sequence[Pair]) -> tuple[np.ndarray, list[str]]:
    chars_a = np.array([_text_length(pair.response_a) for pair in pairs], dtype=float)
    chars_b = np.array([_text_length(pair.response_b) for pair in pairs], dtype=float)
    lines_a = np.array([sum(turn.count("\n") for turn in pair.response_a) for pair in pairs], dtype=float)
    lines_b = np.array([sum(turn.count("\n") for turn in pair.response_b) for pair in pairs], dtype=float)
    prompt_chars = np.array([_text_length(pair.prompt) for pair in pairs], dtype=float)
    columns = {
        "log_chars_a": np.log1p(chars_a),
        "log_chars_b": np.log1p(chars_b),
        "log_chars_diff": np.log1p(chars_a) - np.log1p(chars_b),
        "chars_rel_diff": (chars_a - chars_b) / (chars_a + chars_b + 1.0),
        "log_lines_diff": np.log1p(lines_a) - np.log1p(lines_b),
        "empty_a": (chars_a == 0).astype(float),
        "empty_b": (chars_b == 0).astype(float),
        "log_prompt_chars": np.log1p(prompt_chars),
        "same_response": np.array([pair.response_a == pair.response_b for pair in pairs], dtype=float),
    }
    return np.column_stack(list(columns.values())), list(columns)


def prompt_groups(pairs: Sequence[Pair]) -> np.ndarray:
    """A group id per pair from its prompt text: pairs sharing a prompt must stay on one side of a split."""
    return np.array([int(hashlib.sha1("\x1e".join(pair.prompt).encode()).hexdigest()[:12], 16) for pair in pairs])
