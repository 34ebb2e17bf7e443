"""Training data: labelled rows from weighted sources, the grouped validation split, token ids, batches."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.arena_csv import ArenaDataset, Pair, read_arena_csv
from workers.common.pairs import prompt_groups
from workers.judge.classifier import pair_sequences
from workers.training.config import TrainConfig, TrainingError, TrainingSource

_MEGABATCH_FACTOR = 32  # batches are formed from length-sorted windows of batch_size * this many examples


@dataclass
class Rows:
    """Labelled rows and their token ids in both orders."""

    pairs: list[Pair]
    labels: np.ndarray
    weights: np.ndarray
    sources: list[str]
    sequences: list[tuple[list[int], list[int]]] = field(default_factory=list)
    truncated: int = 0
    origins: np.ndarray | None = None  # index of the input file each row came from

    def subset(self, rows: np.ndarray) -> Rows:
        return Rows(
            pairs=[self.pairs[row] for row in rows],
            labels=self.labels[rows],
            weights=self.weights[rows],
            sources=[self.sources[row] for row in rows],
            origins=None if self.origins is None else self.origins[rows],
        )


def _read_source(source: TrainingSource) -> ArenaDataset:
    if source.weight <= 0:
        raise TrainingError(f"{source.path}: weight {source.weight} must be positive (e.g. --weight 0.5)")
    return read_arena_csv(source.path, require_labels=True)


def _concatenate(parts: Sequence[tuple[ArenaDataset, TrainingSource]]) -> Rows:
    pairs, labels, weights, sources, origins = [], [], [], [], []
    for origin, (dataset, source) in enumerate(parts):
        pairs += dataset.pairs
        labels.append(dataset.labels)
        weights += [source.weight] * len(dataset)
        sources += dataset.sources or [Path(source.path).stem] * len(dataset)
        origins += [origin] * len(dataset)
    return Rows(
        pairs=pairs,
        labels=np.vstack(labels),
        weights=np.array(weights, dtype=float),
        sources=sources,
        origins=np.array(origins, dtype=int),
    )


def validation_mask(groups: np.ndarray, *, fraction: float, seed: int) -> np.ndarray:
    """Prompt groups held out for validation; at least one group when there are two.

    Deliberately not `splits.holdout_mask` with the same seed: a training file made by `arena split` holds exactly
    the groups that mask kept out, so reusing it would find (almost) no validation groups inside that file.
    """
    salted = np.array(
        [int(hashlib.sha1(f"validation:{seed}:{group}".encode()).hexdigest()[:12], 16) for group in groups]
    )
    mask = salted < int(fraction * 16**12)
    unique = np.unique(groups)
    if fraction > 0 and not mask.any() and len(unique) > 1:
        mask = groups == unique[seed % len(unique)]
    if mask.all():
        mask = groups != groups[0]
    return mask


def split_rows(config: TrainConfig) -> tuple[Rows, Rows]:
    """Training and validation rows; validation is grouped by prompt so no prompt is on both sides.

    Validation rows come from the first input only (real labels): rows of the other inputs (synthetic labels,
    often of the same prompts) whose prompt is held out are dropped, neither trained nor validated on.
    """
    rows = _concatenate([(_read_source(source), source) for source in config.sources])
    if config.validation_path is not None:
        validation_source = TrainingSource(Path(config.validation_path))
        validation = _concatenate([(_read_source(validation_source), validation_source)])
        train = rows
    else:
        held_out = validation_mask(prompt_groups(rows.pairs), fraction=config.val_fraction, seed=config.seed)
        primary = rows.origins == 0
        train = rows.subset(np.flatnonzero(~held_out))
        validation = rows.subset(np.flatnonzero(held_out & primary))
    if config.max_val_rows is not None and len(validation.pairs) > config.max_val_rows:
        # A seeded sample across the file: its first rows would often all come from one source.
        keep = np.random.default_rng(config.seed).permutation(len(validation.pairs))[: config.max_val_rows]
        validation = validation.subset(np.sort(keep))
    if not train.pairs:
        raise TrainingError("no training rows are left after the validation split; lower --val-fraction")
    return train, validation


def tokenize(rows: Rows, builder) -> None:
    for pair in rows.pairs:
        sequences, truncated = pair_sequences(builder, pair)
        rows.sequences.append(sequences)
        rows.truncated += int(truncated)


def epoch_batches(lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar-length examples: less padding, still a fresh random order every epoch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * _MEGABATCH_FACTOR
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda index: lengths[index])
        batches += [chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size)]
    return [batches[index] for index in rng.permutation(len(batches))]


def rows_digest(rows: Rows) -> str:
    """Which rows (and weights) a model was trained on, to check a restack uses the same ones."""
    digest = hashlib.sha256()
    for pair, weight in zip(rows.pairs, rows.weights, strict=True):
        digest.update(f"{pair.id}:{weight:.6g}\n".encode())
    return digest.hexdigest()[:16]
