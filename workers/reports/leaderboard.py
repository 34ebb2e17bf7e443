"""Arena leaderboards: Bradley–Terry ratings on the Elo scale, with bootstrap intervals, from any arena CSV.

A *battle* is a row that names both models (`model_a`, `model_b`) and has an outcome, the probabilities
(A wins, B wins, tie). Model A's *score* in it is P(A) + P(tie)/2: a tie counts half a win each way.

- From labels the score is 1, 0 or ½ (or a soft label's expectation).
- From a submission it is the predicted *expected* score: the probabilities weight the rows (sklearn's
  `sample_weight`); no winner is drawn or taken by argmax. The predicted leaderboard is therefore what the
  predictor expects on average, without sampling noise; hesitant predictions (near ⅓ each) give a flatter board
  than confident ones, so predicted ratings spread less than human ones when the predictor is unsure.

The model (the Elo scale of Chatbot Arena, fitted by maximum likelihood rather than by sequential updates):
P(A beats B) = 1 / (1 + 10^((R_B − R_A) / 400)). It is a logistic regression without intercept on
x = ln(10) · (e_A − e_B), fitted by scikit-learn (Newton–Cholesky solver). Battles are summed per pair of models
first, two weighted rows per pair (A's summed score as y = 1, B's as y = 0), so a fit costs the same for a thousand
battles or a million.
Ratings are 1000 + 400 β, shifted so that the models' mean is 1000. A weak Gaussian prior (sklearn's L2 penalty;
standard deviation PRIOR_SD_RATING rating points per model) keeps a model that won or lost every battle finite; with
tens of battles per model it moves ratings by well under a point.

Intervals: the battles are resampled with replacement `bootstrap` times and the ratings refitted (each fit starts
from the last); the 2.5th and 97.5th percentiles are the 95% interval. A model absent from a resample is left out
of that round. The same seed draws the same resamples, so the label and the prediction leaderboards of one file
are bootstrapped on the same battles.

Rows naming no model on either side, or the same model on both, are skipped and counted. The job code calls
`write_dataset_leaderboards`; the parts are `build_leaderboard`, `compare_leaderboards` and
`write_leaderboard_files`.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shared.arena_csv import short
from shared.errors import UserError
from shared.spreadsheet import safe_row
from shared.storage import atomic_writer
from workers.common.figures import figure_text, new_figure, save_png
from workers.common.groups import factorize

if TYPE_CHECKING:
    from shared.arena_csv import ArenaDataset

BASE = 10.0
SCALE = 400.0
INITIAL_RATING = 1000.0
PRIOR_SD_RATING = 2000.0  # the Gaussian prior's standard deviation, in rating points
CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 1000
MAX_BOOTSTRAP = 10_000
MAX_MODELS = 500
MAX_BATTLES = 2_000_000
# Resampling rounds × pairs of models that met: bounds a bootstrap's time (~0.7 s a round at 500 models and
# 100,000 pairs; ~4 ms at a few pairs).
MAX_BOOTSTRAP_WORK = 20_000_000
DENSE_DESIGN_CELLS = 20_000  # a design matrix up to this size is fitted dense (faster), a larger one sparse
PLOT_MAX_MODELS = 60  # the PNG shows the top models only; the CSV has them all
BOARD_COLUMNS = ("model", "rating", "ci_low", "ci_high", "battles")
LABELS = "labels"
PREDICTIONS = "predictions"
HUMAN_PREFIX = "human_"

ProgressCallback = Callable[[int, int], None]


class LeaderboardError(UserError, ValueError):
    """The battles cannot make a leaderboard (no model names, one model, bad outcomes); the message says why."""


@dataclass(frozen=True)
class Leaderboard:
    """Ratings of the models, best first, with their intervals, battle counts and pairwise win rates."""

    models: list[str]
    ratings: np.ndarray  # Elo-scale ratings, mean 1000
    ci_low: np.ndarray  # the 95% bootstrap interval; NaN when bootstrap is 0
    ci_high: np.ndarray
    battles: np.ndarray  # battles per model
    win_rates: np.ndarray  # (m, m): the row model's mean score against the column model; NaN where they never met
    pair_battles: np.ndarray  # (m, m): battles between the two models
    outcome: str  # LABELS or PREDICTIONS: what the scores came from
    bootstrap: int
    seed: int
    total_battles: int
    skipped_rows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[dict]:
        """One dict per model, best first, with the BOARD_COLUMNS (intervals None without a bootstrap)."""
        return [
            {
                "model": model,
                "rating": round(float(rating), 2),
                "ci_low": _finite_or_none(low),
                "ci_high": _finite_or_none(high),
                "battles": int(battles),
            }
            for model, rating, low, high, battles in zip(
                self.models, self.ratings, self.ci_low, self.ci_high, self.battles, strict=True
            )
        ]

    def summary(self) -> dict:
        """What leaderboard.json holds, less the agreement: settings, counts, notes and every row."""
        return {
            "outcome": self.outcome,
            "models": len(self.models),
            "battles": self.total_battles,
            "skipped_rows": dict(self.skipped_rows),
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "confidence": CONFIDENCE,
            "scale": {"base": BASE, "scale": SCALE, "initial_rating": INITIAL_RATING},  # the models' mean rating
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
            "ratings": self.rows(),
        }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 2) if math.isfinite(value) else None


@dataclass(frozen=True)
class _Battles:
    """Battles as model indices (sorted names), summed per unordered pair of models."""

    models: list[str]
    first_score: np.ndarray  # per battle: the score of its pair's first model (the lower index)
    cell: np.ndarray  # per battle: index of its pair in pair_first / pair_second
    pair_first: np.ndarray
    pair_second: np.ndarray
    skipped_rows: dict[str, int]
    unrated: list[str]  # names that appear only in skipped rows


def check_outcomes(
    outcomes: np.ndarray, *, rows: int, ids: Sequence[str] | None = None, what: str = "outcome"
) -> np.ndarray:
    """`outcomes` as an (n, 3) float array of (A wins, B wins, tie) rows that sum to 1, renormalised.

    Raises:
        LeaderboardError: wrong shape, a value that is not finite or negative, or a row that does not sum to 1
            (within 0.01); the message names the first such row (by id when `ids` are given).
    """
    values = np.asarray(outcomes, dtype=np.float64)
    if values.ndim != 2 or values.shape != (rows, 3):
        raise LeaderboardError(
            f"expected one {what} row of 3 probabilities (A wins, B wins, tie) per battle: {rows} rows, got shape"
            f" {values.shape}"
        )
    bad = ~np.isfinite(values).all(axis=1)
    bad |= (np.nan_to_num(values, nan=-1.0) < 0).any(axis=1)
    bad |= np.abs(np.nan_to_num(values).sum(axis=1) - 1.0) > 1e-2
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        where = f"id {ids[index]!r}" if ids is not None else f"row {index + 1}"
        raise LeaderboardError(
            f"{what} of {where} is {values[index].tolist()}; the three probabilities (A wins, B wins, tie) must be"
            f" finite, non-negative and sum to 1 ({int(bad.sum())} such row(s))"
        )
    return values / values.sum(axis=1, keepdims=True)


def _battles(models_a: Sequence[str], models_b: Sequence[str], outcomes: np.ndarray) -> _Battles:
    if len(models_a) != len(models_b):
        raise LeaderboardError(f"{len(models_a)} model_a names but {len(models_b)} model_b names; give one per row")
    outcomes = check_outcomes(outcomes, rows=len(models_a))
    rows = len(models_a)
    # One code per name over both sides (sorted names: code order is name order), in O(rows): numpy strings would be
    # as wide as the longest name, and comparing names row by row costs their length.
    codes, names = factorize(["" if name is None else str(name).strip() for name in (*models_a, *models_b)], sort=True)
    code_a, code_b = codes[:rows], codes[rows:]
    unnamed_code = names.index("") if "" in names else -1
    unnamed = (code_a == unnamed_code) | (code_b == unnamed_code)
    same = ~unnamed & (code_a == code_b)
    keep = ~unnamed & ~same
    skipped_rows = {"no model name": int(unnamed.sum()), "same model on both sides": int(same.sum())}
    mentioned = {name for name in names if name}
    battles = int(keep.sum())
    if battles == 0 and len(mentioned) == 1:
        raise LeaderboardError(
            f"only one model is named ({short(next(iter(mentioned)))}); a leaderboard needs battles between two or more"
        )
    if battles == 0:
        raise LeaderboardError(
            f"no battles: none of the {rows} rows names two different models in model_a and model_b"
            f" ({skipped_rows['no model name']} name none on a side, {skipped_rows['same model on both sides']} the"
            " same model twice); a leaderboard needs rows comparing two named models"
        )
    if battles > MAX_BATTLES:
        raise LeaderboardError(f"{battles:,} battles, over the cap of {MAX_BATTLES:,}; rate a sample of them")
    rated_codes, inverse = np.unique(np.concatenate([code_a[keep], code_b[keep]]), return_inverse=True)
    models = [names[code] for code in rated_codes.tolist()]
    if len(models) > MAX_MODELS:
        raise LeaderboardError(f"{len(models):,} models, over the cap of {MAX_MODELS}; rate fewer models at a time")
    index_a, index_b = inverse[:battles], inverse[battles:]
    score_a = outcomes[keep, 0] + outcomes[keep, 2] / 2
    first = np.minimum(index_a, index_b)
    second = np.maximum(index_a, index_b)
    first_score = np.where(index_a == first, score_a, 1.0 - score_a)
    pair_codes, cell = np.unique(first * len(models) + second, return_inverse=True)
    return _Battles(
        models=models,
        first_score=first_score,
        cell=cell,
        pair_first=pair_codes // len(models),
        pair_second=pair_codes % len(models),
        skipped_rows=skipped_rows,
        unrated=sorted(mentioned - set(models)),
    )


class _RatingFit:
    """The Bradley–Terry fit on per-pair sums: one design matrix, refitted for each set of pair weights."""

    def __init__(self, battles: _Battles) -> None:
        from scipy import sparse
        from sklearn.linear_model import LogisticRegression

        n_models, n_pairs = len(battles.models), len(battles.pair_first)
        rows = np.arange(n_pairs)
        step = math.log(BASE)
        design = sparse.csr_matrix(
            (
                np.concatenate([np.full(n_pairs, step), np.full(n_pairs, -step)]),
                (np.concatenate([rows, rows]), np.concatenate([battles.pair_first, battles.pair_second])),
            ),
            shape=(n_pairs, n_models),
        )
        self.design = sparse.vstack([design, design], format="csr")
        if self.design.shape[0] * n_models <= DENSE_DESIGN_CELLS:
            self.design = self.design.toarray()  # sklearn's Hessian products are several times faster dense
        self.target = np.concatenate([np.ones(n_pairs), np.zeros(n_pairs)])
        # sklearn minimises C · Σ weight · log loss + ½‖β‖²: a Gaussian prior on β = (R − 1000) / 400 of
        # standard deviation σ is C = σ².
        self.model = LogisticRegression(
            C=(PRIOR_SD_RATING / SCALE) ** 2,
            fit_intercept=False,
            # Few features, many rows: Newton steps converge in 2–3 iterations, ~10x faster than L-BFGS here.
            solver="newton-cholesky",
            tol=1e-8,
            max_iter=200,
            warm_start=True,
        )

    def ratings(self, first_wins: np.ndarray, second_wins: np.ndarray) -> np.ndarray:
        """Ratings (not yet centred) for the summed scores of each pair's first and second model."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # A resample can make a model unbeaten; the prior bounds it, slowly: the fit is still usable.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(self.design, self.target, sample_weight=np.concatenate([first_wins, second_wins]))
        return INITIAL_RATING + SCALE * self.model.coef_[0]


def _centred(ratings: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Shift so the present models average INITIAL_RATING; absent ones are NaN."""
    centred = np.where(present, ratings, np.nan)
    return centred - np.nanmean(centred) + INITIAL_RATING


def _pair_sums(battles: _Battles, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: battles, the first model's summed score, the second's; `counts` weights each battle (a resample)."""
    n_pairs = len(battles.pair_first)
    weights = np.ones(len(battles.cell)) if counts is None else counts.astype(np.float64)
    played = np.bincount(battles.cell, weights=weights, minlength=n_pairs)
    first_wins = np.bincount(battles.cell, weights=weights * battles.first_score, minlength=n_pairs)
    return played, first_wins, played - first_wins


def _model_battles(battles: _Battles, played_per_pair: np.ndarray) -> np.ndarray:
    n_models = len(battles.models)
    return np.bincount(battles.pair_first, weights=played_per_pair, minlength=n_models) + np.bincount(
        battles.pair_second, weights=played_per_pair, minlength=n_models
    )


def _groups(battles: _Battles) -> int:
    """How many groups of models never met one another, directly or through others."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    n_models = len(battles.models)
    graph = sparse.coo_matrix(
        (np.ones(len(battles.pair_first)), (battles.pair_first, battles.pair_second)), shape=(n_models, n_models)
    )
    return int(connected_components(graph, directed=False)[0])


def build_leaderboard(
    models_a: Sequence[str],
    models_b: Sequence[str],
    outcomes: np.ndarray,
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    outcome: str = LABELS,
    on_progress: ProgressCallback | None = None,
) -> Leaderboard:
    """Bradley–Terry ratings of the models in the battles, with bootstrap intervals and pairwise win rates.

    Args:
        models_a: per row, the name of model A ("" where unknown: the row is skipped).
        models_b: per row, the name of model B.
        outcomes: (n, 3) probabilities per row of (A wins, B wins, tie): labels, soft labels or a submission.
        bootstrap: resamples of the battles for the 95% intervals, 0 to MAX_BOOTSTRAP; 0: no intervals.
        seed: seed of the resampling; the same seed gives the same intervals.
        outcome: what the outcomes are, LABELS or PREDICTIONS (recorded in the summary only).
        on_progress: called with (rounds done, bootstrap) as the resampling goes.

    Returns:
        The leaderboard, best model first.

    Raises:
        LeaderboardError: no battles, one model only, too many models or battles, a bad outcome row, or a
            `bootstrap` out of range.
    """
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise LeaderboardError(f"bootstrap must be between 0 and {MAX_BOOTSTRAP:,} rounds, got {bootstrap:,}")
    started = time.perf_counter()
    battles = _battles(models_a, models_b, outcomes)
    n_models = len(battles.models)
    n_pairs = len(battles.pair_first)
    if bootstrap * n_pairs > MAX_BOOTSTRAP_WORK:
        raise LeaderboardError(
            f"{bootstrap:,} bootstrap rounds over {n_pairs:,} pairs of models is over the cap of"
            f" {MAX_BOOTSTRAP_WORK:,} pair-rounds; use at most {MAX_BOOTSTRAP_WORK // n_pairs:,} rounds"
        )
    fit = _RatingFit(battles)
    played, first_wins, second_wins = _pair_sums(battles)
    ratings = _centred(fit.ratings(first_wins, second_wins), np.ones(n_models, dtype=bool))

    low = high = np.full(n_models, np.nan)
    if bootstrap:
        rng = np.random.default_rng(seed)
        samples = np.empty((bootstrap, n_models))
        size = len(battles.cell)
        every = math.ceil(bootstrap / 100)  # at most ~100 progress reports
        for round_index in range(bootstrap):
            counts = np.bincount(rng.integers(0, size, size=size), minlength=size)
            played_sample, first_sample, second_sample = _pair_sums(battles, counts)
            present = _model_battles(battles, played_sample) > 0
            samples[round_index] = _centred(fit.ratings(first_sample, second_sample), present)
            done = round_index + 1
            if on_progress is not None and (done % every == 0 or done == bootstrap):
                on_progress(done, bootstrap)
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)

    pair_matrix = np.zeros((n_models, n_models))
    score_matrix = np.zeros((n_models, n_models))
    np.add.at(pair_matrix, (battles.pair_first, battles.pair_second), played)
    np.add.at(score_matrix, (battles.pair_first, battles.pair_second), first_wins)
    np.add.at(score_matrix, (battles.pair_second, battles.pair_first), second_wins)
    pair_matrix = pair_matrix + pair_matrix.T
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rates = np.where(pair_matrix > 0, score_matrix / pair_matrix, np.nan)

    notes = []
    if battles.unrated:
        notes.append(
            f"{len(battles.unrated)} model(s) with no battle against another named model, left off the board:"
            f" {', '.join(short(name) for name in battles.unrated[:10])}{', …' if len(battles.unrated) > 10 else ''}"
        )
    skipped = sum(battles.skipped_rows.values())
    if skipped:
        notes.append(
            f"{skipped} row(s) skipped: {battles.skipped_rows['no model name']} name no model on a side,"
            f" {battles.skipped_rows['same model on both sides']} the same model on both sides"
        )
    groups = _groups(battles)
    if groups > 1:
        notes.append(
            f"the models form {groups} groups that never met one another, even through other models: ratings compare"
            " within a group only"
        )

    order = np.lexsort((np.arange(n_models), -ratings))  # best first; equal ratings by name (models are sorted)
    return Leaderboard(
        models=[battles.models[index] for index in order],
        ratings=ratings[order],
        ci_low=low[order],
        ci_high=high[order],
        battles=_model_battles(battles, played)[order].astype(int),
        win_rates=win_rates[np.ix_(order, order)],
        pair_battles=pair_matrix[np.ix_(order, order)].astype(int),
        outcome=outcome,
        bootstrap=bootstrap,
        seed=seed,
        total_battles=len(battles.cell),
        skipped_rows=battles.skipped_rows,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def compare_leaderboards(human: Leaderboard, predicted: Leaderboard) -> dict:
    """How well `predicted` reproduces `human` over the models both rate.

    Returns:
        models compared; Spearman and Kendall rank correlations of the ratings (with their p-values); the mean and
        largest absolute rating difference (both boards average 1000, so the differences are comparable); whether
        the top model is the same. A correlation is None when a board rates every model the same.
    """
    from scipy.stats import kendalltau, spearmanr

    predicted_models = set(predicted.models)
    common = [model for model in human.models if model in predicted_models]
    if len(common) < 2:
        raise LeaderboardError(f"the two leaderboards share {len(common)} model(s); comparing them needs two or more")
    human_rank = {model: index for index, model in enumerate(human.models)}
    predicted_rank = {model: index for index, model in enumerate(predicted.models)}
    human_ratings = np.array([human.ratings[human_rank[model]] for model in common])
    predicted_ratings = np.array([predicted.ratings[predicted_rank[model]] for model in common])
    spearman = spearmanr(human_ratings, predicted_ratings)
    kendall = kendalltau(human_ratings, predicted_ratings)
    differences = np.abs(predicted_ratings - human_ratings)

    def number(value: float) -> float | None:
        return round(float(value), 4) if math.isfinite(value) else None

    return {
        "models": len(common),
        "spearman": number(spearman.statistic),
        "spearman_p": number(spearman.pvalue),
        "kendall": number(kendall.statistic),
        "kendall_p": number(kendall.pvalue),
        "mean_abs_rating_difference": number(differences.mean()),
        "max_abs_rating_difference": number(differences.max()),
        "same_top_model": human.models[0] == predicted.models[0],
        "human_top": human.models[0],
        "predicted_top": predicted.models[0],
    }


def _cell(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else ""


def plot_leaderboard(board: Leaderboard, path: Path, *, reference: Leaderboard | None = None, title: str = "") -> Path:
    """Ratings with their 95% intervals, best on top; `reference` (e.g. the human board) drawn beside them."""
    shown = board.models[:PLOT_MAX_MODELS]
    positions = np.arange(len(shown))[::-1].astype(float)
    with new_figure(figsize=(7, 1.2 + 0.35 * len(shown))) as (figure, axis):
        series = [(board, "tab:blue", "o", 0.0)]
        if reference is not None:  # side by side: the board a little above, the reference a little below
            series = [(board, "tab:blue", "o", 0.15), (reference, "tab:orange", "s", -0.15)]
        for leaderboard, colour, marker, offset in series:
            rank = {model: index for index, model in enumerate(leaderboard.models)}
            present = [model for model in shown if model in rank]
            rows = [rank[model] for model in present]
            y = positions[[shown.index(model) for model in present]] + offset
            ratings = leaderboard.ratings[rows]
            errors = None
            if leaderboard.bootstrap:
                errors = np.vstack([ratings - leaderboard.ci_low[rows], leaderboard.ci_high[rows] - ratings])
            axis.errorbar(ratings, y, xerr=errors, fmt=marker, color=colour, capsize=3, label=leaderboard.outcome)
        axis.axvline(INITIAL_RATING, color="grey", linewidth=0.8, linestyle="--")
        axis.set_yticks(positions, [figure_text(model) for model in shown])  # names are users' text: never TeX
        axis.set_xlabel(f"Bradley–Terry rating (Elo scale, mean {INITIAL_RATING:.0f})")
        more = f", top {len(shown)} of {len(board.models)}" if len(board.models) > len(shown) else ""
        interval = (
            f"{CONFIDENCE:.0%} bootstrap intervals, {board.bootstrap} rounds" if board.bootstrap else "no intervals"
        )
        against = f" and {reference.outcome}" if reference is not None else ""
        axis.set_title(
            figure_text(title or f"Ratings from {board.outcome}{against} ({interval}{more})", limit=None), fontsize=10
        )
        if reference is not None:
            axis.legend(loc="best", fontsize=8)
        figure.tight_layout()
        return save_png(figure, path)


def write_leaderboard_files(
    board: Leaderboard,
    output_dir: Path,
    *,
    prefix: str = "",
    agreement: dict | None = None,
    reference: Leaderboard | None = None,
) -> list[str]:
    """Write `{prefix}leaderboard.csv` (BOARD_COLUMNS, best first), `…_winrates.csv`, `….png` and `….json`.

    Args:
        board: the leaderboard.
        output_dir: the folder (created when missing); each file is written atomically.
        prefix: prepended to each file name ("human_" for the labels' board beside a predicted one).
        agreement: compare_leaderboards' figures, stored in the JSON.
        reference: another board to draw beside this one in the PNG (the human one).

    Returns:
        The names of the files written, in `output_dir`.
    """
    output_dir = Path(output_dir)
    names = [f"{prefix}leaderboard.csv", f"{prefix}leaderboard_winrates.csv", f"{prefix}leaderboard.png"]
    with atomic_writer(output_dir / names[0], "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(BOARD_COLUMNS)
        for model, rating, low, high, battles in zip(
            board.models, board.ratings, board.ci_low, board.ci_high, board.battles, strict=True
        ):
            writer.writerow(safe_row([model, _cell(rating), _cell(low), _cell(high), int(battles)]))
    with atomic_writer(output_dir / names[1], "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        # the row model's mean score against each column model
        writer.writerow(safe_row(["model", *board.models]))
        for model, rates in zip(board.models, board.win_rates, strict=True):
            writer.writerow(safe_row([model, *(f"{rate:.3f}" if math.isfinite(rate) else "" for rate in rates)]))
    plot_leaderboard(board, output_dir / names[2], reference=reference)
    summary = board.summary()
    if agreement is not None:
        summary["agreement_with_human"] = agreement
    names.append(f"{prefix}leaderboard.json")
    with atomic_writer(output_dir / names[3], "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return names


def dataset_models(dataset: ArenaDataset, *, name: str = "the input") -> tuple[list[str], list[str]]:
    """The model names of each row of `dataset`.

    Raises:
        LeaderboardError: the file has no `model_a` / `model_b` columns.
    """
    if dataset.models_a is None or dataset.models_b is None:
        raise LeaderboardError(
            f"{name} has no model_a / model_b columns; a leaderboard needs the names of the two models of each row"
            " (Kaggle's train.csv has them, its test.csv does not)"
        )
    return dataset.models_a, dataset.models_b


def write_dataset_leaderboards(
    dataset: ArenaDataset,
    output_dir: Path,
    *,
    predictions: np.ndarray | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    name: str = "the input",
    on_progress: ProgressCallback | None = None,
) -> dict:
    """The leaderboards of one arena file, written to `output_dir`: the CLI's and the job's one path.

    `leaderboard.*` is the predicted board when `predictions` are given, else the labels' board. With both labels
    and predictions, the labels' board is written too (`human_leaderboard.*`) and leaderboard.json holds the
    agreement (compare_leaderboards).

    Args:
        dataset: the arena file, read by read_arena_csv (labels optional; model_a / model_b required).
        output_dir: the folder to write to.
        predictions: (n, 3) probabilities aligned with `dataset.ids` (read_submission(..., exact=True)), or None.
        bootstrap: resampling rounds per board (0 to MAX_BOOTSTRAP).
        seed: resampling seed (the same for both boards: they resample the same battles).
        name: how messages call the file.
        on_progress: called with (rounds done, rounds in all) over both boards.

    Returns:
        A summary: the files written, each board's summary ("leaderboard", and "human_leaderboard" with
        predictions), and "agreement" when both exist.

    Raises:
        LeaderboardError: no model columns, neither labels nor predictions, or any of build_leaderboard's reasons.
    """
    models_a, models_b = dataset_models(dataset, name=name)
    if predictions is None and dataset.labels is None:
        raise LeaderboardError(
            f"{name} has no labels (winner_model_a, winner_model_b, winner_tie) and no predictions were given; a"
            " leaderboard needs one or the other"
        )
    if predictions is not None:
        predictions = check_outcomes(predictions, rows=len(dataset), ids=dataset.ids, what="the prediction")
    boards = [
        (outcomes, kind)
        for outcomes, kind in ((dataset.labels, LABELS), (predictions, PREDICTIONS))
        if outcomes is not None
    ]
    total = bootstrap * len(boards)

    def progress_from(done_before: int) -> ProgressCallback | None:
        if on_progress is None:
            return None
        return lambda done, _total: on_progress(done_before + done, total)

    built = {
        kind: build_leaderboard(
            models_a,
            models_b,
            outcomes,
            bootstrap=bootstrap,
            seed=seed,
            outcome=kind,
            on_progress=progress_from(index * bootstrap),
        )
        for index, (outcomes, kind) in enumerate(boards)
    }
    output_dir = Path(output_dir)
    if PREDICTIONS not in built:
        board = built[LABELS]
        return {"files": write_leaderboard_files(board, output_dir), "leaderboard": board.summary()}
    predicted = built[PREDICTIONS]
    summary: dict = {"files": [], "leaderboard": predicted.summary()}
    human = built.get(LABELS)
    agreement = None
    if human is not None:
        agreement = compare_leaderboards(human, predicted)
        summary["files"] += write_leaderboard_files(human, output_dir, prefix=HUMAN_PREFIX)
        summary["human_leaderboard"] = human.summary()
        summary["agreement"] = agreement
    summary["files"] = [
        *write_leaderboard_files(predicted, output_dir, agreement=agreement, reference=human),
        *summary["files"],
    ]
    return summary
