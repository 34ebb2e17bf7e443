"""The domain check: is a predict job's data like its text predictor's training data?

The statistic is the median, over the scored rows, of each row's highest cosine between its prompt embedding (the
text model's own sentence encoder) and any training prompt. Measured on ../shared/data with
scripts/bench/bench_generalisation.py (docs/benchmarks.md, "Generalisation"): 0.467–0.485 for every in-domain fold
(trained on the other prompt folds) and 0.389–0.439 for every left-out source (trained on the other four). The log
loss there was ~0.88 in domain and ~1.06 on left-out sources (uniform: 1.0986), so a low statistic says "expect
about 1.06". The alarm threshold (DOMAIN_ALARM_COSINE, default 0.455) is the midpoint between the two ranges.

What the check does about it (checked_probabilities): a set of DOMAIN_SHRINK_MIN_ROWS or more unlike rows is
answered by the predictor's transfer model (transfer_model.py), which scored 1.005 there against 1.056; a predictor
without one gets the shrink toward the training prior (1.025).

A text predictor folder carries the reference (`domain_reference.npz`): unit-length float16 embeddings of up to
DOMAIN_REFERENCE_PROMPTS distinct training prompts (a random sample with the fit's seed), plus the figures measured
at fit time. A folder fitted before the check existed has none: its jobs say "no reference".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.storage import atomic_writer

# The shipped data has ~3,000 distinct prompts: all of them fit. A cap keeps predict bounded (chunk rows × this
# many dot products of 384 numbers) and the file small (~3 MB at float16) for a predictor fitted on far more rows.
DOMAIN_REFERENCE_PROMPTS = 4_000
# Row-weighted log loss of the text predictor on sources it never saw, measured by leaving each of the five
# sources of ../shared/data out in turn (docs/benchmarks.md, "Generalisation"): the figure to expect on unlike data.
UNLIKE_DATA_LOG_LOSS = 1.06  # recipe 2, mean of 5 seeds (recipe 1: 1.07)
# The same left-out figure once the shipped output is mixed with the training prior at DOMAIN_SHRINK_WEIGHT 0.5
# (recipe 2, seeds 0 and 1: 1.0258): what a shrunk job should expect.
UNLIKE_DATA_SHRUNK_LOG_LOSS = 1.03
# The same left-out figure from the transfer model (transfer_model.py) on the sources the check flags (recipe 3,
# seeds 0 and 1; 1.008 when its regularisation is chosen for each left-out source on the other four alone).
UNLIKE_DATA_TRANSFER_LOG_LOSS = 1.01
NO_REFERENCE_NOTE = "no reference: refit to get a domain check"
# Half the measured gap between the lowest in-domain fold (0.467) and the highest left-out source (0.439). The
# statistic falls with fewer reference prompts (a predictor fitted on 372 prompts reads 0.36–0.39 on its own
# folds), so a predictor's alarm is at most this far below its own lowest fold, whatever DOMAIN_ALARM_COSINE says.
DOMAIN_ALARM_MARGIN = 0.014


def alarm_threshold(figures: dict, *, setting: float) -> float:
    """DOMAIN_ALARM_COSINE, lowered for a predictor whose own in-domain folds read lower than the shipped data's."""
    folds = figures.get("in_domain_statistics") or []
    return round(min(setting, min(folds) - DOMAIN_ALARM_MARGIN), 4) if folds else setting


@dataclass
class DomainReference:
    """Training prompt embeddings and the figures the domain check compares against."""

    prompts: np.ndarray  # (n, dim) unit-length, float16
    figures: dict  # in_domain_statistic(s), expected_log_loss_in_domain, unlike_data_log_loss, sample sizes

    def save(self, path: Path) -> Path:
        with atomic_writer(Path(path), "wb") as handle:
            np.savez_compressed(
                handle, prompts=self.prompts.astype(np.float16), figures=np.array(json.dumps(self.figures))
            )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> DomainReference | None:
        """The folder's reference, or None when it has none (fitted before the check existed)."""
        if not Path(path).is_file():
            return None
        with np.load(Path(path)) as stored:
            return cls(prompts=stored["prompts"], figures=json.loads(str(stored["figures"])))

    def nearest_cosines(self, prompt_vectors: np.ndarray) -> np.ndarray:
        """Each row's highest cosine to any reference prompt (the rows are unit-length already)."""
        return nearest_cosines(prompt_vectors, self.prompts)


def nearest_cosines(prompt_vectors: np.ndarray, reference: np.ndarray, *, block_rows: int = 1024) -> np.ndarray:
    """Each row's highest cosine to any row of `reference`, in blocks so memory stays at block_rows × len(reference)."""
    reference = np.asarray(reference, dtype=np.float32)
    vectors = np.asarray(prompt_vectors, dtype=np.float32)
    if len(reference) == 0:
        return np.full(len(vectors), np.nan)
    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), block_rows):
        out[start : start + block_rows] = (vectors[start : start + block_rows] @ reference.T).max(axis=1)
    return out


def sample_distinct(vectors: np.ndarray, keys: Sequence[str], *, limit: int, seed: int) -> np.ndarray:
    """Up to `limit` rows of `vectors` with distinct `keys` (prompts), drawn at random with `seed`."""
    first: dict[str, int] = {}
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    rows = np.asarray(list(first.values()), dtype=int)
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    return vectors[rows]


def in_domain_statistics(
    prompt_vectors: np.ndarray, keys: Sequence[str], groups: np.ndarray, *, limit: int, seed: int
) -> list[float]:
    """The statistic on each of 5 folds grouped by prompt, each fold against a reference drawn from the other folds
    the way a fit draws its own: what a new set of the training data's kind reads."""
    from sklearn.model_selection import GroupKFold

    n_splits = min(5, len(np.unique(groups)))
    if n_splits < 2:
        return []
    statistics = []
    for train, test in GroupKFold(n_splits=n_splits).split(prompt_vectors, groups=groups):
        reference = sample_distinct(prompt_vectors[train], [keys[row] for row in train], limit=limit, seed=seed)
        statistics.append(round(float(np.median(nearest_cosines(prompt_vectors[test], reference))), 4))
    return statistics


def domain_check(
    nearest: np.ndarray,
    figures: dict,
    *,
    setting: float,
    shrink_weight: float = 0.0,
    shrink_min_rows: int = 1,
    transfer_available: bool = False,
) -> dict:
    """The job's verdict from its rows' nearest-prompt cosines: the statistic, the decision and what to expect.

    `setting` is DOMAIN_ALARM_COSINE; the threshold applied is alarm_threshold's. An unlike set of at least
    `shrink_min_rows` rows (DOMAIN_SHRINK_MIN_ROWS) is answered by the transfer model when one is available
    (`answered_by`: "transfer model"); else, with `shrink_weight` (DOMAIN_SHRINK_WEIGHT) above 0 and a predictor that
    recorded its training class prior, it gets `shrink`: the weight and prior to mix its probabilities with
    (shrink_toward_prior). The caller applies either.
    """
    threshold = alarm_threshold(figures, setting=setting)
    values = np.asarray(nearest, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"note": "no rows to check"}
    statistic = round(float(np.median(values)), 4)
    like_training = statistic >= threshold
    in_domain = figures.get("expected_log_loss_in_domain")
    unlike = figures.get("unlike_data_log_loss", UNLIKE_DATA_LOG_LOSS)
    expected = in_domain if like_training else unlike
    shrink = transfer = False
    if like_training:
        note = (
            f"Prompts are like the predictor's training prompts (median nearest cosine {statistic:.3f}, alarm below"
            f" {threshold:.3f}); expect a log loss near its cross-validated {in_domain:.3f}."
            if in_domain is not None
            else f"Prompts are like the predictor's training prompts (median nearest cosine {statistic:.3f})."
        )
    else:
        prior = figures.get("class_prior")
        large_enough = len(values) >= shrink_min_rows
        transfer = transfer_available and large_enough
        shrink = not transfer and shrink_weight > 0 and prior is not None and large_enough
        acted = ""
        if transfer:
            expected = UNLIKE_DATA_TRANSFER_LOG_LOSS
            acted = (
                " Its probabilities are its transfer model's (a small linear model of length and style, which carried"
                f" over best to sources it never saw; the text model's own scored {unlike:.2f} there)."
            )
        elif shrink:
            expected = UNLIKE_DATA_SHRUNK_LOG_LOSS
            acted = (
                f" Its probabilities were mixed with the training prior at weight {shrink_weight:g}, which scored"
                f" better there ({unlike:.2f} without)."
            )
        note = (
            f"These prompts are unlike the predictor's training data (median nearest cosine {statistic:.3f}, below"
            f" {threshold:.3f}): expect a log loss near {expected:.2f}, as measured on sources it never saw (uniform"
            " guessing: 1.099), not its in-domain figure."
            + acted
            + " Fit a predictor on labelled rows of this kind to do better."
        )
    verdict = {
        "statistic": statistic,
        "statistic_name": "median over rows of the highest prompt-embedding cosine to any training prompt",
        "threshold": threshold,
        "like_training": bool(like_training),
        "expected_log_loss": expected,
        "in_domain_statistics": figures.get("in_domain_statistics"),
        "reference_prompts": figures.get("reference_prompts"),
        "note": note,
    }
    if not like_training and transfer:
        verdict["answered_by"] = "transfer model"
    elif not like_training and shrink:
        verdict["shrink"] = {"weight": float(shrink_weight), "prior": [float(value) for value in prior]}
    return verdict


def checked_probabilities(
    probabilities: np.ndarray,
    nearest: np.ndarray,
    figures: dict,
    *,
    settings,
    transfer_logprobs: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """A prediction's domain check with the settings' threshold, transfer model and shrink, and its probabilities
    after it: the one place a predict job's assembly and `arena predict` apply it. `transfer_logprobs` are the
    transfer model's outputs for the same rows (None: the predictor has none)."""
    verdict = domain_check(
        nearest,
        figures,
        setting=settings.DOMAIN_ALARM_COSINE,
        shrink_weight=settings.DOMAIN_SHRINK_WEIGHT,
        shrink_min_rows=settings.DOMAIN_SHRINK_MIN_ROWS,
        transfer_available=settings.DOMAIN_TRANSFER_MODEL and transfer_logprobs is not None,
    )
    # Unlike the training data: answered as measured best on sources the predictor never saw.
    if verdict.get("answered_by") == "transfer model":
        probabilities = np.exp(np.asarray(transfer_logprobs, dtype=float))
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    elif "shrink" in verdict:
        probabilities = shrink_toward_prior(probabilities, verdict["shrink"])
    return probabilities, verdict


def shrink_toward_prior(probabilities: np.ndarray, shrink: dict) -> np.ndarray:
    """(1 - weight) * probabilities + weight * prior, rows still summing to 1."""
    weight, prior = shrink["weight"], np.asarray(shrink["prior"], dtype=float)
    return (1 - weight) * np.asarray(probabilities, dtype=float) + weight * prior / prior.sum()
