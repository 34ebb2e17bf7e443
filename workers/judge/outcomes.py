"""Outcomes of a comparison: the classes (A, B, tie), the vote columns, softmax, and un-swapping a swapped order."""

from __future__ import annotations

import numpy as np

CLASS_LABELS = ("A", "B", "tie")

# Vote columns, in prompts.VOTES order.
VOTE_A, VOTE_B, VOTE_TIE, VOTE_NA = range(4)
_SWAP_VOTES = [VOTE_B, VOTE_A, VOTE_TIE, VOTE_NA]
_SWAP_CLASSES = [1, 0, 2]


def unswap_votes(vote_logprobs: np.ndarray) -> np.ndarray:
    """Votes cast with B shown first, re-expressed for the original (A, B) order."""
    return vote_logprobs[..., _SWAP_VOTES]


def unswap_classes(probabilities: np.ndarray) -> np.ndarray:
    """(A, B, tie) probabilities of the swapped pair, re-expressed for the original pair."""
    return probabilities[..., _SWAP_CLASSES]


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = scores - scores.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
