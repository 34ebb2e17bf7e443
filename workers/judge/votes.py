"""The 5-criteria discriminator's votes: per criterion, both orders, aggregated to (A, B, tie); the votes file."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from shared.arena_csv import Pair
from shared.storage import atomic_writer
from workers.judge.engines import JudgeEngine
from workers.judge.outcomes import softmax, unswap_votes
from workers.judge.prompts import JudgePromptBuilder


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
    # (n,) each row's highest prompt-embedding cosine to the text predictor's training prompts (predictor/domain.py),
    # when the predictor carries a domain reference.
    prompt_nearest_cosine: np.ndarray | None = None
    # (n, 3) log-probabilities of the text predictor's transfer model (predictor/transfer_model.py), when it has one:
    # what the domain check answers with for a set unlike the training data.
    transfer_logprobs: np.ndarray | None = None

    @property
    def raw_probabilities(self) -> np.ndarray:
        """Uncalibrated (A, B, tie): the adapter's softmax averaged over orders when it judged, else the votes'."""
        if self.adapter_logits is not None:
            return softmax(self.adapter_logits).mean(axis=1)
        if self.text_logprobs is not None and self.vote_logprobs.shape[2] == 0:
            return np.exp(self.text_logprobs)  # a text predictor shipped without its calibrator
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


# --- the votes file: one reader, one writer (CLI --save-votes, a predict chunk, the job's votes.npz) -------------

_OPTIONAL_ARRAYS = ("adapter_logits", "text_logprobs", "prompt_nearest_cosine", "transfer_logprobs")


def write_votes(handle: BinaryIO, result: JudgeResult, **extra: np.ndarray) -> None:
    """Write the judge's raw outputs (votes, truncation, classifier logits, text model) and `extra` arrays."""
    optional = {name: getattr(result, name) for name in _OPTIONAL_ARRAYS if getattr(result, name) is not None}
    np.savez_compressed(
        handle,
        ids=np.array(result.ids),
        vote_logprobs=result.vote_logprobs,
        truncated=result.truncated,
        **optional,
        **extra,
    )


def save_votes(path: Path, result: JudgeResult) -> Path:
    """Keep the judge's raw votes so calibrators can be refitted without judging again (written atomically)."""
    with atomic_writer(Path(path), "wb") as handle:
        write_votes(handle, result)
    return Path(path)


def load_votes(path: Path, ids: list[str] | None = None) -> JudgeResult:
    """The judge's outputs stored at `path`, for `ids` in that order (every stored row when None)."""
    with np.load(Path(path)) as stored:
        stored_ids = [str(value) for value in stored["ids"]]
        if ids is None:
            ids = stored_ids
        position = {row_id: index for index, row_id in enumerate(stored_ids)}
        missing = [row_id for row_id in ids if row_id not in position]
        if missing:
            raise ValueError(f"{path} holds no votes for {len(missing)} id(s), e.g. {missing[:3]}; judge them again")
        rows = [position[row_id] for row_id in ids]
        return JudgeResult(
            ids=list(ids),
            vote_logprobs=stored["vote_logprobs"][rows],
            truncated=stored["truncated"][rows],
            seconds=0.0,
            prompt_tokens=0,
            **{name: stored[name][rows] if name in stored.files else None for name in _OPTIONAL_ARRAYS},
        )


def concatenate_results(parts: list[JudgeResult]) -> JudgeResult:
    """Results of consecutive row ranges (a job's chunks) as one, in the given order."""

    def joined(name: str) -> np.ndarray | None:
        arrays = [getattr(part, name) for part in parts]
        return None if any(array is None for array in arrays) else np.concatenate(arrays)

    return JudgeResult(
        ids=[row_id for part in parts for row_id in part.ids],
        vote_logprobs=np.concatenate([part.vote_logprobs for part in parts]),
        truncated=np.concatenate([part.truncated for part in parts]),
        seconds=sum(part.seconds for part in parts),
        prompt_tokens=sum(part.prompt_tokens for part in parts),
        **{name: joined(name) for name in _OPTIONAL_ARRAYS},
    )
