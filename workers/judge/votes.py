"""The 5-criteria discriminator: votes per criterion, both orders, aggregated to (A, B, tie)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.arena_csv import Pair
from workers.judge.engines import JudgeEngine
from workers.judge.prompts import JudgePromptBuilder

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


def aggregate_votes(vote_logprobs: np.ndarray) -> np.ndarray:
    """Expected vote counts per class over the criteria, through a softmax; NA carries no weight.

    Args:
        vote_logprobs: (..., n_criteria, 4) restricted log-probabilities of A, B, AB, NA.

    Returns:
        (..., 3) probabilities of (A, B, tie).
    """
    expected_votes = np.exp(vote_logprobs)[..., :3].sum(axis=-2)
    return softmax(expected_votes)


def tta_probabilities(oriented_vote_logprobs: np.ndarray) -> np.ndarray:
    """Average of the per-order aggregates; input is already in the pair's own (A, B) orientation.

    Args:
        oriented_vote_logprobs: (n, n_orders, n_criteria, 4).
    """
    return aggregate_votes(oriented_vote_logprobs).mean(axis=1)


@dataclass
class JudgeResult:
    ids: list[str]
    # (n, n_orders, n_criteria, 4), every order expressed for the pair's own (A, B) order.
    vote_logprobs: np.ndarray
    truncated: np.ndarray
    seconds: float
    prompt_tokens: int
    stats: dict = field(default_factory=dict)
    # (n, n_orders, 3) logits of a trained classifier adapter, every order in the pair's own orientation;
    # None when no classifier adapter judged. vote_logprobs then has no criteria unless votes were asked for too.
    adapter_logits: np.ndarray | None = None
    # (n, 3) log-probabilities of the adapter's text model (text_features.py), when the adapter carries one.
    text_logprobs: np.ndarray | None = None

    @property
    def raw_probabilities(self) -> np.ndarray:
        """Uncalibrated (A, B, tie): the adapter's softmax averaged over orders when it judged, else the votes'."""
        if self.adapter_logits is not None:
            return softmax(self.adapter_logits).mean(axis=1)
        return tta_probabilities(self.vote_logprobs)

    @property
    def n_orders(self) -> int:
        return int(self.vote_logprobs.shape[1])


def judge_pairs(
    pairs: Sequence[Pair],
    *,
    engine: JudgeEngine,
    prompt_builder: JudgePromptBuilder,
    tta: bool = True,
    chunk_pairs: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> JudgeResult:
    """Ask every criterion about every pair, in both orders when `tta` is on.

    Args:
        pairs: the comparisons.
        engine: where prompts run.
        prompt_builder: turns pairs into token ids (and truncates long ones).
        tta: also judge with the responses swapped and un-swap those votes.
        chunk_pairs: pairs per engine call.
        on_progress: called with (pairs done, total) after each chunk.

    Returns:
        Per-criterion vote log-probabilities of each order, and truncation flags.
    """
    started = time.perf_counter()
    n_orders = 2 if tta else 1
    suffixes = prompt_builder.suffix_ids
    vote_ids = prompt_builder.vote_token_ids
    n_votes = len(vote_ids)
    vote_logprobs = np.zeros((len(pairs), n_orders, len(suffixes), n_votes))
    truncated = np.zeros(len(pairs), dtype=bool)
    prompt_tokens = 0
    for start in range(0, len(pairs), chunk_pairs):
        chunk = pairs[start : start + chunk_pairs]
        prompts = [prompt_builder.build(pair) for pair in chunk]
        truncated[start : start + len(chunk)] = [prompt.truncated for prompt in prompts]
        prefixes = [prompt.prefixes[order] for prompt in prompts for order in range(n_orders)]
        prompt_tokens += sum(len(prefix) + len(suffix) for prefix in prefixes for suffix in suffixes)
        chunk_logprobs = engine.vote_logprobs(prefixes, suffixes, vote_ids).reshape(
            len(chunk), n_orders, len(suffixes), n_votes
        )
        if tta:
            chunk_logprobs[:, 1] = unswap_votes(chunk_logprobs[:, 1])
        vote_logprobs[start : start + len(chunk)] = chunk_logprobs
        if on_progress is not None:
            on_progress(start + len(chunk), len(pairs))
    return JudgeResult(
        ids=[pair.id for pair in pairs],
        vote_logprobs=vote_logprobs,
        truncated=truncated,
        seconds=time.perf_counter() - started,
        prompt_tokens=prompt_tokens,
    )
