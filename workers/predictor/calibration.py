"""Calibrators that turn criterion votes and/or a trained adapter's logits (+ length features) into calibrated
(A, B, tie) probabilities.

Fitting uses scikit-learn / scipy; applying a saved calibrator needs only numpy and its JSON file.
Every calibrator is symmetric: it is fitted on both orientations of each pair and its prediction is
averaged with the un-swapped prediction of the mirrored pair, so swapping A and B swaps the output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shared.arena_csv import Pair
from shared.calibration_file import CALIBRATION_FORMAT, CalibrationFileError, read_calibration_file
from shared.errors import UserError
from shared.storage import atomic_write_text
from workers.common.pairs import length_features, prompt_groups
from workers.common.soft_labels import multiclass_log_loss, soft_label_rows
from workers.judge.outcomes import CLASS_LABELS, log_softmax, softmax, unswap_classes, unswap_votes
from workers.judge.prompts import CRITERION_NAMES, VOTES
from workers.judge.votes import aggregate_votes

_LOGPROB_FLOOR = -20.0
_REGULARISATION_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


class CalibrationError(UserError, ValueError):
    """A calibration file cannot be used as asked; the message says how to fix it."""


def vote_features(vote_logprobs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Flattened per-order, per-criterion vote log-probs plus each order's aggregated log-probs."""
    n, n_orders, n_criteria, n_votes = vote_logprobs.shape
    names = [
        f"order{order}_{CRITERION_NAMES[criterion]}_{VOTES[vote]}"
        for order in range(n_orders)
        for criterion in range(n_criteria)
        for vote in range(n_votes)
    ]
    flat = np.maximum(vote_logprobs, _LOGPROB_FLOOR).reshape(n, -1)
    aggregated = np.log(aggregate_votes(vote_logprobs)).reshape(n, -1)
    names += [f"order{order}_aggregate_{label}" for order in range(n_orders) for label in ("A", "B", "tie")]
    return np.column_stack([flat, aggregated]), names


def adapter_features(adapter_logits: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per-order log-probabilities of a trained classifier adapter, plus their mean over the orders.

    Args:
        adapter_logits: (n, n_orders, 3) logits of (A, B, tie), every order in the pair's own orientation.
    """
    n, n_orders, _ = adapter_logits.shape
    log_probabilities = log_softmax(adapter_logits)
    names = [f"adapter_order{order}_{label}" for order in range(n_orders) for label in CLASS_LABELS]
    names += [f"adapter_mean_{label}" for label in CLASS_LABELS]
    return np.column_stack([log_probabilities.reshape(n, -1), log_probabilities.mean(axis=1)]), names


def has_votes(vote_logprobs: np.ndarray | None) -> bool:
    """False when the judge cast no criterion votes (a classifier adapter judged alone)."""
    return vote_logprobs is not None and vote_logprobs.ndim == 4 and vote_logprobs.shape[2] > 0


def mirror_votes(vote_logprobs: np.ndarray) -> np.ndarray:
    """The votes as they would read for the pair with A and B swapped (orders swap too)."""
    return unswap_votes(vote_logprobs[:, ::-1])


def mirror_adapter_logits(adapter_logits: np.ndarray) -> np.ndarray:
    """The adapter's logits as they would read for the pair with A and B swapped (orders swap too)."""
    return unswap_classes(adapter_logits[:, ::-1])


def text_features(text_logprobs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The text model's (A, B, tie) log-probabilities (text_features.py), already symmetric over orders."""
    return np.maximum(text_logprobs, _LOGPROB_FLOOR), [f"text_{label}" for label in CLASS_LABELS]


def build_features(
    vote_logprobs: np.ndarray | None,
    pairs: Sequence[Pair],
    adapter_logits: np.ndarray | None = None,
    text_logprobs: np.ndarray | None = None,
    *,
    with_length: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Calibrator features: votes (when cast), adapter and text-model log-probabilities (when given), lengths."""
    parts, names = [], []
    if has_votes(vote_logprobs):
        votes, vote_names = vote_features(vote_logprobs)
        parts.append(votes)
        names += vote_names
    if adapter_logits is not None:
        adapter, adapter_names = adapter_features(adapter_logits)
        parts.append(adapter)
        names += adapter_names
    if text_logprobs is not None:
        text, text_names = text_features(text_logprobs)
        parts.append(text)
        names += text_names
    if with_length:
        lengths, length_names = length_features(pairs)
        parts.append(lengths)
        names += length_names
    return np.column_stack(parts), names


def _mirrored_inputs(
    vote_logprobs: np.ndarray | None,
    pairs: Sequence[Pair],
    adapter_logits: np.ndarray | None = None,
    text_logprobs: np.ndarray | None = None,
) -> tuple[np.ndarray | None, list[Pair], np.ndarray | None, np.ndarray | None]:
    return (
        mirror_votes(vote_logprobs) if has_votes(vote_logprobs) else None,
        [pair.swapped() for pair in pairs],
        None if adapter_logits is None else mirror_adapter_logits(adapter_logits),
        None if text_logprobs is None else unswap_classes(text_logprobs),
    )


def raw_log_probabilities(
    vote_logprobs: np.ndarray | None, adapter_logits: np.ndarray | None, *, source: str
) -> np.ndarray:
    """Log of the uncalibrated (A, B, tie) probabilities averaged over orders, from the votes or the adapter."""
    if source == "adapter":
        raw = np.exp(log_softmax(adapter_logits)).mean(axis=1)
    else:
        raw = aggregate_votes(vote_logprobs).mean(axis=1)
    return np.log(np.clip(raw, 1e-12, 1.0))


@dataclass
class Calibrator:
    """A fitted calibrator, stored as JSON."""

    method: str  # "logistic" or "temperature"
    n_orders: int
    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]  # (3, n_features) for logistic; [[1 / T]] for temperature
    intercept: list[float]
    regularisation: float | None
    fitted_on: dict
    # What the calibrator reads: "votes" (criterion votes), "adapter" (a trained classifier adapter's logits),
    # "text" (the text model's log-probabilities, text_features.py), "length" (length features). Files written
    # before this field existed read votes (+ length for logistic).
    inputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.inputs:
            self.inputs = ["votes", "length"] if self.method == "logistic" else ["votes"]

    @property
    def needs_votes(self) -> bool:
        return "votes" in self.inputs

    @property
    def needs_adapter(self) -> bool:
        return "adapter" in self.inputs

    @property
    def needs_text(self) -> bool:
        return "text" in self.inputs

    @property
    def reads_orders(self) -> bool:
        """Whether its inputs come per response order (votes, adapter logits); the text model's come averaged."""
        return self.needs_votes or self.needs_adapter

    def _scores(
        self,
        vote_logprobs: np.ndarray | None,
        pairs: Sequence[Pair],
        adapter_logits: np.ndarray | None,
        text_logprobs: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.method == "temperature":
            source = "adapter" if self.needs_adapter else "votes"
            return raw_log_probabilities(vote_logprobs, adapter_logits, source=source) * self.coef[0][0]
        features, names = build_features(
            vote_logprobs if self.needs_votes else None,
            pairs,
            adapter_logits if self.needs_adapter else None,
            text_logprobs if self.needs_text else None,
            with_length="length" in self.inputs,
        )
        if names != self.feature_names:
            raise CalibrationError(
                "calibration features do not match this judge's output; refit with `arena calibrate`"
            )
        standardised = (features - np.array(self.mean)) / np.array(self.scale)
        return standardised @ np.array(self.coef).T + np.array(self.intercept)

    def check_inputs(
        self,
        vote_logprobs: np.ndarray | None,
        adapter_logits: np.ndarray | None,
        text_logprobs: np.ndarray | None = None,
        *,
        text_expected: bool = False,
    ) -> None:
        """Raise CalibrationError, saying what to pass, when the judge's output lacks what this calibrator reads.

        `text_expected`: the judge will compute text-model log-probabilities even though none are passed yet.
        """
        if self.needs_text and text_logprobs is None and not text_expected:
            raise CalibrationError(
                "this calibrator stacks the text model of a trained adapter; pass --adapter DIR (the adapter"
                " folder holding text_model.json), or use a calibrator fitted without it"
            )
        if self.needs_adapter and adapter_logits is None:
            raise CalibrationError(
                "this calibrator stacks a trained classifier adapter's output; pass --adapter DIR (the adapter it"
                " was fitted with), or use a calibrator fitted on the criterion votes"
            )
        if self.needs_votes and not has_votes(vote_logprobs):
            raise CalibrationError(
                "this calibrator reads the criterion votes but the judge cast none; judge with the base model"
                " (no classifier adapter), or use the calibration.json that came with the adapter"
            )
        produced = next(
            (array.shape[1] for array in (vote_logprobs, adapter_logits) if array is not None and array.ndim >= 2),
            self.n_orders,
        )
        if self.reads_orders and produced != self.n_orders:
            hint = "drop --no-tta" if self.n_orders == 2 else "pass --no-tta"
            raise CalibrationError(
                f"this calibrator was fitted on {self.n_orders} order(s) per pair but the judge produced"
                f" {produced}; {hint}, or refit the calibrator to match"
            )

    def predict(
        self,
        vote_logprobs: np.ndarray | None,
        pairs: Sequence[Pair],
        adapter_logits: np.ndarray | None = None,
        text_logprobs: np.ndarray | None = None,
    ) -> np.ndarray:
        """Calibrated (n, 3) probabilities, averaged over the pair and its mirror.

        Args:
            vote_logprobs: (n, n_orders, n_criteria, 4) criterion votes, or None / no criteria when none were cast.
            pairs: the pairs (for length features).
            adapter_logits: (n, n_orders, 3) logits of a trained classifier adapter, when the calibrator stacks one.
            text_logprobs: (n, 3) log-probabilities of the adapter's text model, when the calibrator stacks it.
        """
        self.check_inputs(vote_logprobs, adapter_logits, text_logprobs)
        direct = softmax(self._scores(vote_logprobs, pairs, adapter_logits, text_logprobs))
        mirrored = softmax(self._scores(*_mirrored_inputs(vote_logprobs, pairs, adapter_logits, text_logprobs)))
        return 0.5 * (direct + unswap_classes(mirrored))

    def save(self, path: Path) -> Path:
        atomic_write_text(Path(path), json.dumps({"format": CALIBRATION_FORMAT, **asdict(self)}, indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Calibrator:
        """The calibrator in a file, its schema checked by the rule the gateway applies at submit too."""
        try:
            return cls(**read_calibration_file(Path(path)))
        except CalibrationFileError as exc:
            raise CalibrationError(str(exc)) from None


def fit_calibrator(
    vote_logprobs: np.ndarray | None,
    pairs: Sequence[Pair],
    labels: np.ndarray,
    *,
    method: str = "logistic",
    fitted_on: dict | None = None,
    adapter_logits: np.ndarray | None = None,
    text_logprobs: np.ndarray | None = None,
    with_length: bool = True,
) -> Calibrator:
    """Fit a calibrator on labelled pairs.

    Args:
        vote_logprobs: (n, n_orders, n_criteria, 4) judge output in pair orientation; None (or no criteria)
            to calibrate a classifier adapter's logits alone.
        pairs: the pairs (for length features).
        labels: (n, 3) probabilities of (A, B, tie).
        method: "logistic" (multinomial LR over votes and/or adapter log-probabilities + length features;
            regularisation chosen by cross-validation grouped by prompt) or "temperature" (one temperature on
            the raw adapter probabilities when `adapter_logits` is given, else on the raw votes).
        fitted_on: provenance stored in the file.
        adapter_logits: (n, n_orders, 3) logits of a trained classifier adapter, in pair orientation.
        text_logprobs: (n, 3) log-probabilities of a text model (logistic method only), in pair orientation.
        with_length: add the length features (logistic method only). The text model already reads lengths; on
            a few hundred validation rows nine more columns can cost more in variance than they add.

    Returns:
        The fitted calibrator.
    """
    if not has_votes(vote_logprobs):
        vote_logprobs = None
    if vote_logprobs is None and adapter_logits is None and text_logprobs is None:
        raise CalibrationError("nothing to calibrate: give criterion votes, adapter logits or text-model output")
    if vote_logprobs is None and adapter_logits is None and method == "temperature":
        raise CalibrationError("a temperature calibrator needs criterion votes or adapter logits; use logistic")
    per_order = vote_logprobs if vote_logprobs is not None else adapter_logits
    # The text model averages both orders itself, so a calibrator of it alone reads no orders.
    n_orders = int(per_order.shape[1]) if per_order is not None else 2
    inputs = (["votes"] if vote_logprobs is not None else []) + (["adapter"] if adapter_logits is not None else [])
    fitted_on = dict(fitted_on or {}, rows=len(pairs))
    if method == "temperature":
        source = "adapter" if adapter_logits is not None else "votes"
        return _fit_temperature(
            vote_logprobs, adapter_logits, labels, source=source, n_orders=n_orders, fitted_on=fitted_on
        )
    if method != "logistic":
        raise CalibrationError(f"unknown calibration method {method!r}; use 'logistic' or 'temperature'")
    inputs += ["text"] if text_logprobs is not None else []
    return _fit_logistic(
        vote_logprobs,
        pairs,
        labels,
        adapter_logits=adapter_logits,
        text_logprobs=text_logprobs,
        with_length=with_length,
        n_orders=n_orders,
        inputs=inputs,
        fitted_on=fitted_on,
    )


def _fit_temperature(
    vote_logprobs, adapter_logits, labels, *, source: str, n_orders: int, fitted_on: dict
) -> Calibrator:
    """One temperature on the raw probabilities of `source` (a dense 1-D grid, then a finer one around its best)."""
    log_raw = raw_log_probabilities(vote_logprobs, adapter_logits, source=source)
    grid = np.concatenate([[0.0], np.geomspace(1e-3, 50.0, 400)])
    losses = [multiclass_log_loss(labels, softmax(log_raw * inv_t)) for inv_t in grid]
    best = int(np.argmin(losses))
    fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 101)
    inv_temperature = float(min(fine, key=lambda inv_t: multiclass_log_loss(labels, softmax(log_raw * inv_t))))
    fitted_on["log_loss"] = multiclass_log_loss(labels, softmax(log_raw * inv_temperature))
    return Calibrator(
        "temperature", n_orders, [], [], [], [[inv_temperature]], [0.0, 0.0, 0.0], None, fitted_on, [source]
    )


def _fit_logistic(
    vote_logprobs, pairs, labels, *, adapter_logits, text_logprobs, with_length, n_orders, inputs, fitted_on
) -> Calibrator:
    """Multinomial LR over both orientations of every pair, its regularisation chosen by grouped CV."""
    features, names = build_features(vote_logprobs, pairs, adapter_logits, text_logprobs, with_length=with_length)
    mirrored, _ = build_features(
        *_mirrored_inputs(vote_logprobs, pairs, adapter_logits, text_logprobs), with_length=with_length
    )
    both_features = np.vstack([features, mirrored])
    both_labels = np.vstack([labels, unswap_classes(labels)])
    groups = prompt_groups(pairs)
    mean = both_features.mean(axis=0)
    scale = both_features.std(axis=0)
    scale[scale < 1e-9] = 1.0
    standardised = (both_features - mean) / scale
    scores = _cv_log_loss_by_regularisation(standardised, both_labels, groups)
    best_c = min(scores, key=scores.get) if scores else 0.1
    coef, intercept = _multinomial_coefficients(_fit_soft_lr(standardised, both_labels, best_c), standardised.shape[1])
    fitted_on["cv_log_loss_by_regularisation"] = scores
    return Calibrator(
        "logistic",
        n_orders,
        names,
        mean.tolist(),
        scale.tolist(),
        coef.tolist(),
        intercept.tolist(),
        best_c,
        fitted_on,
        [*inputs, "length"] if with_length else inputs,
    )


def _fit_soft_lr(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    rows_x, rows_y, weights, _ = soft_label_rows(x, y)
    return LogisticRegression(C=c, max_iter=2000).fit(rows_x, rows_y, sample_weight=weights)


def _cv_log_loss_by_regularisation(standardised: np.ndarray, both_labels: np.ndarray, groups: np.ndarray) -> dict:
    """Grouped-CV log loss of each regularisation strength (both orientations of a prompt stay in one fold)."""
    from sklearn.model_selection import GroupKFold

    both_groups = np.concatenate([groups, groups])
    n_splits = min(5, len(np.unique(groups)))
    scores: dict = {}
    if n_splits < 2:
        return scores
    for c in _REGULARISATION_GRID:
        losses = []
        for train_rows, test_rows in GroupKFold(n_splits=n_splits).split(standardised, groups=both_groups):
            if len(np.unique(both_labels[train_rows].argmax(axis=1))) < 3:
                continue
            model = _fit_soft_lr(standardised[train_rows], both_labels[train_rows], c)
            losses.append(multiclass_log_loss(both_labels[test_rows], _proba3(model, standardised[test_rows])))
        if losses:
            scores[c] = float(np.mean(losses))
    return scores


def _multinomial_coefficients(model, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, n_features) coefficients and 3 intercepts, whatever classes the fitted model saw."""
    coef = np.zeros((3, n_features))
    intercept = np.zeros(3)
    coef[model.classes_] = model.coef_ if len(model.classes_) > 2 else _binary_to_multinomial(model.coef_)
    intercept[model.classes_] = model.intercept_ if len(model.classes_) > 2 else [0.0, model.intercept_[0]]
    absent = np.setdiff1d(np.arange(3), model.classes_)
    intercept[absent] = -30.0  # a class never seen in training gets (almost) no mass
    return coef, intercept


def _binary_to_multinomial(coef: np.ndarray) -> np.ndarray:
    return np.vstack([np.zeros_like(coef[0]), coef[0]])


def _proba3(model, x: np.ndarray) -> np.ndarray:
    probabilities = np.full((len(x), 3), 1e-12)
    probabilities[:, model.classes_] = model.predict_proba(x)
    return probabilities / probabilities.sum(axis=1, keepdims=True)
