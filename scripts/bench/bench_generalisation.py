"""What a user whose data comes from a source we never trained on gets: leave-one-source-out beside in-domain CV.

For each source S of the labelled CSV, the text predictor's recipe (text model + its calibrator, as `arena train
--text-only` fits it) is fitted on the other sources' rows and scores S's rows ("left out"). Beside it, the same
recipe's grouped-by-prompt 5-fold CV over all sources, scored per source ("in domain"; the calibrator is cross-fitted
on the same prompt folds so neither figure sees its own labels). Every text is embedded once; every figure is the
mean over --seeds LightGBM/PCA seeds.

Levers (issue 32), each a row of the table:
- model variants (refitted): `balanced` weights every source equally in total; `drop-GROUP` holds a feature group
  at zero (length, semantic, style, similarity, pca-sum, pca-prompt); `with-pca-diff` adds back the 32-component
  projection of the response difference that recipe 1 had.
- calibrators on a model's outputs (no refit), each chosen on source-held-out outputs: for left-out S, on the
  left-out outputs of the *other* sources (S's labels choose nothing); in domain, on all sources' left-out outputs.
  `temperature` (one temperature on the shipped output), `shrink` (mix toward the training rows' class prior),
  `loso-lr` (the multinomial LR calibrator fitted on left-out outputs instead of prompt-grouped ones), `tie-lr`
  (that LR with how alike A and B are as inputs too: the tie signal), `near-shrink` (a shrink toward the prior
  whose weight falls with the row's nearest training-prompt cosine, sigmoid(a + b (cosine - 0.45)): fitted for
  each source S on the other sources' in-domain and left-out outputs together, and applied to S's rows on both
  sides, so S's labels choose nothing and the same function serves data like and unlike the training data).
- `transfer`: the text model's transfer model (workers/predictor/transfer_model.py) on every left-out source.
- what the domain check ships, on whole sets: `flagged: transfer (shipped)` answers each left-out source that the
  check flags (median nearest cosine under DOMAIN_ALARM_COSINE, DOMAIN_SHRINK_MIN_ROWS rows or more) with the
  transfer model and leaves the rest as shipped; `flagged: shrink` does the same with the shrink (before recipe 3).
  In domain both are the shipped output (no in-domain fold is flagged; the script warns if one is).
- figures that use S's labels, so no recipe without them can reach them: `oracle-shrink` mixes the left-out output
  with S's own class prior at the weight that fits S's labels best; `oracle-lr` is the LR calibrator fitted on S's
  own left-out outputs and labels, cross-fitted over S's prompt folds (what a calibrator on a user's labels gives).

    PYTHONPATH=. .venv-worker/bin/python scripts/bench/bench_generalisation.py --seeds 3 --variants base,balanced
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from workers.common.hardware import prepare_process_environment  # noqa: E402  (the path above first)

prepare_process_environment()
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "preference_pairs.csv"
MODEL_VARIANTS = (
    "base",
    "balanced",
    "drop-length",
    "drop-semantic",
    "drop-style",
    "drop-similarity",
    "with-pca-diff",
    "drop-pca-sum",
    "drop-pca-prompt",
)
CALIBRATIONS = (
    "shipped",
    "temperature",
    "shrink",
    "loso-lr",
    "tie-lr",
    "near-shrink",
    "transfer",
    "flagged: shrink",
    "flagged: transfer (shipped)",
    "oracle-shrink",
    "oracle-lr",
)
# How alike the two responses are (symmetric in A and B): the tie-lr calibrator's extra inputs.
TIE_COLUMNS = (
    "cos_a_b",
    "sim_word_jaccard",
    "sim_char_match_600",
    "sim_abs_log_len",
    "sim_identical",
    "sim_both_short",
)
_INVERSE_TEMPERATURES = np.linspace(0.2, 1.5, 131)
_SHRINKS = np.linspace(0.0, 0.9, 91)
_ORACLE_SHRINKS = np.linspace(0.0, 1.0, 101)  # up to the prior alone
_NEAR_SHRINK_OFFSETS = np.linspace(-6.0, 4.0, 41)
_NEAR_SHRINK_SLOPES = np.linspace(-80.0, 0.0, 33)


@dataclass
class Outputs:
    """One model variant's outputs for every row: raw text model and shipped-calibrated, in domain and left out."""

    in_domain_raw: np.ndarray
    in_domain_shipped: np.ndarray
    left_out_raw: np.ndarray
    left_out_shipped: np.ndarray
    left_out_transfer: np.ndarray  # the transfer model's (transfer_model.py), what a flagged job gets


def feature_groups(pairs, embeddings) -> dict[str, list[str]]:
    """The text model's feature names by group (what `drop-GROUP` holds at zero)."""
    from workers.common.pairs import length_features
    from workers.predictor.text_model import (
        _SIMILARITY_NAMES,
        PROJECTION_SIZES,
        _style_feature_names,
        semantic_features,
    )

    similarity = [f"sim_{name}" for name in _SIMILARITY_NAMES]
    groups = {
        "length": length_features(pairs[:1])[1],
        "semantic": semantic_features(embeddings)[1],
        "style": [name for name in _style_feature_names() if name not in similarity],
        "similarity": similarity,
    }
    for name, size in PROJECTION_SIZES.items():
        groups[f"pca-{name}"] = [f"{name}_pc{index}" for index in range(size)]
    return groups


def temper(probabilities: np.ndarray, inverse_temperature: float) -> np.ndarray:
    scaled = np.clip(probabilities, 1e-12, 1.0) ** inverse_temperature
    return scaled / scaled.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_DATA, help="labelled Kaggle-format CSV with `source`")
    parser.add_argument("--seeds", type=int, default=3, help="how many LightGBM/PCA seeds; figures are their mean")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument(
        "--variants", default="base", help=f"comma-separated model variants: {','.join(MODEL_VARIANTS)}"
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--save-outputs", type=Path, help="also write each variant's and seed's outputs here (.npz) for later study"
    )
    args = parser.parse_args(argv)
    variants = [name.strip() for name in args.variants.split(",") if name.strip() and name.strip() != "none"]
    if set(variants) - set(MODEL_VARIANTS):
        parser.error(f"--variants: choose from {', '.join(MODEL_VARIANTS)}")
    if args.seeds < 1:
        parser.error("--seeds: at least 1")

    from shared.arena_csv import read_arena_csv
    from shared.settings import get_settings
    from workers.common.pairs import prompt_groups
    from workers.predictor.sentence_encoder import open_text_encoder
    from workers.predictor.text_model import embed_pairs, semantic_features, style_features

    settings = get_settings()
    dataset = read_arena_csv(args.input, require_labels=True)
    if dataset.sources is None:
        parser.error(f"{args.input} has no `source` column; leave-one-source-out needs one")
    sources = np.asarray(dataset.sources)
    encoder = open_text_encoder(settings, settings.text_encoder_path)
    started = time.perf_counter()
    embeddings = embed_pairs(dataset.pairs, encoder)
    print(f"embedded in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    semantic, semantic_names = semantic_features(embeddings)
    style, style_names = style_features(dataset.pairs)
    tie_inputs = np.column_stack([semantic, style])[:, [(semantic_names + style_names).index(c) for c in TIE_COLUMNS]]
    context = {
        "pairs": dataset.pairs,
        "labels": dataset.labels,
        "sources": sources,
        "groups": prompt_groups(dataset.pairs),
        "embeddings": embeddings,
        "encoder": encoder,
    }

    domain = domain_statistics(embeddings, sources, context["groups"])
    nearest = row_nearest_cosines(embeddings, sources, context["groups"])
    print(json.dumps({"prompt_nearest_cosine_median": domain}, indent=1), file=sys.stderr, flush=True)
    # What the shipped check does with each whole set: acts on an unlike set of DOMAIN_SHRINK_MIN_ROWS or more rows.
    flagged = {
        source
        for source, statistic in domain["left_out"].items()
        if statistic < settings.DOMAIN_ALARM_COSINE and (sources == source).sum() >= settings.DOMAIN_SHRINK_MIN_ROWS
    }
    if min(domain["in_domain_folds"]) < settings.DOMAIN_ALARM_COSINE:
        print("warning: an in-domain fold reads as unlike; the flagged rows leave it as shipped", file=sys.stderr)
    print(f"flagged left-out sources: {sorted(flagged)}", file=sys.stderr, flush=True)
    results: dict[str, dict] = {}
    saved: dict[str, np.ndarray] = {"labels": dataset.labels, "sources": sources}
    for variant in variants:
        per_seed = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            begun = time.perf_counter()
            outputs = fit_variant(variant, seed=seed, **context)
            for field, values in vars(outputs).items():
                saved[f"{variant}/{seed}/{field}"] = values
            per_seed.append(
                score_calibrations(
                    outputs, dataset.labels, sources, tie_inputs, nearest, groups=context["groups"], flagged=flagged
                )
            )
            print(f"{variant} seed {seed}: {time.perf_counter() - begun:.0f}s", file=sys.stderr, flush=True)
        for calibration in per_seed[0]:
            results[f"{variant} / {calibration}"] = mean_over_seeds([seed[calibration] for seed in per_seed])
        print_table(results, sources)

    summary = {
        "input": str(args.input),
        "rows": len(dataset),
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d"),
        "prompt_nearest_cosine_median": domain,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.save_outputs:
        np.savez_compressed(args.save_outputs, **saved)
    print_table(results, sources, markdown=True)


def domain_statistics(embeddings, sources: np.ndarray, groups: np.ndarray) -> dict:
    """How like its training rows a scored set is: the median, over the set's rows, of the highest cosine between
    the row's prompt embedding and any training prompt. Per left-out source (trained on the others) and per
    in-domain fold (trained on the other prompt folds): the statistic a domain check would read."""
    from sklearn.model_selection import GroupKFold

    def median_nearest(scored: np.ndarray, reference: np.ndarray) -> float:
        similarity = embeddings.prompt[scored] @ embeddings.prompt[reference].T
        return round(float(np.median(similarity.max(axis=1))), 4)

    left_out = {
        source: median_nearest(np.nonzero(sources == source)[0], np.nonzero(sources != source)[0])
        for source in sorted(set(sources))
    }
    folds = GroupKFold(n_splits=5).split(sources, groups=groups)
    in_domain = [median_nearest(test, train) for train, test in folds]
    return {"left_out": left_out, "in_domain_folds": in_domain}


def row_nearest_cosines(embeddings, sources: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Each row's highest prompt cosine to the rows its model trained on: in domain, the other prompt folds (the
    folds fit_text_model's CV uses); left out, the other sources."""
    from sklearn.model_selection import GroupKFold

    from workers.predictor.domain import nearest_cosines

    in_domain = np.zeros(len(sources))
    for train, test in GroupKFold(n_splits=5).split(sources, groups=groups):
        in_domain[test] = nearest_cosines(embeddings.prompt[test], embeddings.prompt[train])
    left_out = np.zeros(len(sources))
    for source in sorted(set(sources)):
        test, train = np.nonzero(sources == source)[0], np.nonzero(sources != source)[0]
        left_out[test] = nearest_cosines(embeddings.prompt[test], embeddings.prompt[train])
    return {"in_domain": in_domain, "left_out": left_out}


def fit_near_shrink(probabilities: np.ndarray, nearest: np.ndarray, labels: np.ndarray, prior: np.ndarray):
    """The (offset, slope) of shrink weight sigmoid(offset + slope (nearest - 0.45)) that fits these rows best."""
    from workers.common.soft_labels import multiclass_log_loss

    best = (np.inf, 0.0, 0.0)
    for offset in _NEAR_SHRINK_OFFSETS:
        for slope in _NEAR_SHRINK_SLOPES:
            loss = multiclass_log_loss(labels, near_shrink(probabilities, nearest, prior, offset, slope))
            best = min(best, (loss, float(offset), float(slope)))
    return best[1], best[2]


def near_shrink(probabilities, nearest, prior, offset: float, slope: float) -> np.ndarray:
    weight = 1.0 / (1.0 + np.exp(-(offset + slope * (nearest - 0.45))))
    return (1 - weight[:, None]) * probabilities + weight[:, None] * prior


def embeddings_of(embeddings, rows: np.ndarray):
    """The PairEmbeddings of these rows."""
    from workers.predictor.text_model import PairEmbeddings

    return PairEmbeddings(embeddings.prompt[rows], embeddings.response_a[rows], embeddings.response_b[rows])


def fit_rows(rows: np.ndarray, *, seed: int, pairs, labels, groups, embeddings, encoder, **options):
    """The text model's recipe fitted on these rows of the labelled set (`options` go to fit_text_model)."""
    from workers.predictor.text_model import fit_text_model

    return fit_text_model(
        [pairs[row] for row in rows],
        labels[rows],
        embeddings_of(embeddings, rows),
        groups=groups[rows],
        seed=seed,
        encoder=encoder.name,
        encoder_backend=encoder.backend,
        **options,
    )


def fit_variant(variant: str, *, seed: int, pairs, labels, sources, groups, embeddings, encoder) -> Outputs:
    """Fit the recipe on all rows (in domain) and once per left-out source; return every row's outputs."""
    from workers.predictor.text_model import PROJECTION_SIZES

    def subset(rows: np.ndarray):
        return embeddings_of(embeddings, rows)

    def fit(rows: np.ndarray):
        weights = None
        if variant == "balanced":
            counts = {source: int((sources[rows] == source).sum()) for source in set(sources[rows])}
            weights = np.array([len(rows) / (len(counts) * counts[source]) for source in sources[rows]])
        excluded = []
        if variant.startswith("drop-"):
            excluded = feature_groups(pairs, embeddings)[variant.removeprefix("drop-")]
        fitted = fit_rows(
            rows,
            seed=seed,
            pairs=pairs,
            labels=labels,
            groups=groups,
            embeddings=embeddings,
            encoder=encoder,
            weights=weights,
            projection_sizes={**PROJECTION_SIZES, "diff": 32} if variant == "with-pca-diff" else None,
            excluded_features=excluded,
        )
        return fitted, shipped_calibrator([pairs[row] for row in rows], labels[rows], fitted.out_of_fold)

    everything = np.arange(len(pairs))
    fitted, _ = fit(everything)
    in_domain_raw = fitted.out_of_fold
    in_domain_shipped = cross_fitted_calibration([*pairs], labels, in_domain_raw, groups)
    left_out_raw = np.zeros_like(in_domain_raw)
    left_out_shipped = np.zeros_like(in_domain_raw)
    left_out_transfer = np.zeros_like(in_domain_raw)
    for source in sorted(set(sources)):
        test = np.nonzero(sources == source)[0]
        fitted, calibrator = fit(np.nonzero(sources != source)[0])
        test_pairs = [pairs[row] for row in test]
        left_out_raw[test], left_out_transfer[test] = fitted.model.outputs(test_pairs, subset(test))
        left_out_shipped[test] = calibrator.predict(None, test_pairs, text_logprobs=log(left_out_raw[test]))
    return Outputs(in_domain_raw, in_domain_shipped, left_out_raw, left_out_shipped, left_out_transfer)


def log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probabilities, 1e-12, 1.0))


def shipped_calibrator(pairs, labels: np.ndarray, out_of_fold: np.ndarray):
    """The calibrator fit_text_predictor ships: multinomial LR over the prompt-grouped out-of-fold log-probs."""
    from workers.predictor.calibration import fit_calibrator

    return fit_calibrator(None, pairs, labels, text_logprobs=log(out_of_fold), with_length=False)


def cross_fitted_calibration(pairs, labels: np.ndarray, raw: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The shipped calibrator's output on each row from a calibrator fitted on the other prompt folds."""
    from sklearn.model_selection import GroupKFold

    calibrated = np.zeros_like(raw)
    for train, test in GroupKFold(n_splits=5).split(raw, groups=groups):
        calibrator = shipped_calibrator([pairs[row] for row in train], labels[train], raw[train])
        calibrated[test] = calibrator.predict(None, [pairs[row] for row in test], text_logprobs=log(raw[test]))
    return calibrated


def fit_lr(raw: np.ndarray, extra: np.ndarray | None, labels: np.ndarray):
    """A symmetric multinomial LR over log-probs (+ symmetric extra columns): fitted on both orders, applied to
    both and averaged, so swapping A and B swaps its output (as the shipped calibrator)."""
    from sklearn.linear_model import LogisticRegression

    from workers.common.soft_labels import soft_label_rows
    from workers.judge.outcomes import unswap_classes

    def features(probabilities: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
        return log(probabilities) if columns is None else np.column_stack([log(probabilities), columns])

    x = np.vstack([features(raw, extra), features(unswap_classes(raw), extra)])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    rows_x, rows_y, weights, _ = soft_label_rows((x - mean) / scale, np.vstack([labels, unswap_classes(labels)]))
    model = LogisticRegression(C=0.1, max_iter=2000).fit(rows_x, rows_y, sample_weight=weights)

    def probabilities_of(x: np.ndarray) -> np.ndarray:
        full = np.full((len(x), 3), 1e-6)  # a class the labels never had (hhh has no ties) keeps a floor
        full[:, model.classes_] = model.predict_proba(x)
        return full / full.sum(axis=1, keepdims=True)

    def predict(probabilities: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
        direct = probabilities_of((features(probabilities, columns) - mean) / scale)
        mirrored = probabilities_of((features(unswap_classes(probabilities), columns) - mean) / scale)
        return 0.5 * (direct + unswap_classes(mirrored))

    return predict


def score_calibrations(
    outputs: Outputs,
    labels: np.ndarray,
    sources: np.ndarray,
    tie_inputs: np.ndarray,
    nearest: dict[str, np.ndarray],
    *,
    groups: np.ndarray,
    flagged: set[str],
) -> dict:
    """Per calibration: in-domain and left-out log loss, per source and row-weighted. `flagged`: the left-out
    sources the domain check flags as whole sets of enough rows (the `flagged: ...` rows act on those only)."""
    from sklearn.model_selection import GroupKFold

    from workers.common.soft_labels import multiclass_log_loss

    def loss(probabilities: np.ndarray, rows: np.ndarray) -> float:
        return multiclass_log_loss(labels[rows], probabilities[rows])

    def shrink(probabilities: np.ndarray, weight: float, prior: np.ndarray) -> np.ndarray:
        return (1 - weight) * probabilities + weight * prior

    def choose(rows: np.ndarray) -> tuple[float, float]:
        """1 / temperature and the prior's weight that fit `rows`' left-out outputs best."""
        shipped, prior = outputs.left_out_shipped[rows], labels[rows].mean(axis=0)
        inverse_t = min(_INVERSE_TEMPERATURES, key=lambda value: loss_of(temper(shipped, value), rows))
        weight = min(_SHRINKS, key=lambda value: loss_of(shrink(shipped, value, prior), rows))
        return float(inverse_t), float(weight)

    def loss_of(probabilities: np.ndarray, rows: np.ndarray) -> float:
        return multiclass_log_loss(labels[rows], probabilities)

    everything = np.arange(len(labels))
    left_out = {name: np.zeros_like(labels, dtype=float) for name in CALIBRATIONS}
    left_out["shipped"] = outputs.left_out_shipped
    near_in_domain = np.zeros_like(labels, dtype=float)
    near_chosen: dict[str, tuple[float, float]] = {}
    for source in sorted(set(sources)):
        test, others = np.nonzero(sources == source)[0], np.nonzero(sources != source)[0]
        inverse_t, weight = choose(others)
        left_out["temperature"][test] = temper(outputs.left_out_shipped[test], inverse_t)
        left_out["shrink"][test] = shrink(outputs.left_out_shipped[test], weight, labels[others].mean(axis=0))
        lr = fit_lr(outputs.left_out_raw[others], None, labels[others])
        left_out["loso-lr"][test] = lr(outputs.left_out_raw[test], None)
        tie_lr = fit_lr(outputs.left_out_raw[others], tie_inputs[others], labels[others])
        left_out["tie-lr"][test] = tie_lr(outputs.left_out_raw[test], tie_inputs[test])
        both = np.concatenate([others, others])
        prior = labels[others].mean(axis=0)
        offset, slope = fit_near_shrink(
            np.vstack([outputs.in_domain_shipped[others], outputs.left_out_shipped[others]]),
            np.concatenate([nearest["in_domain"][others], nearest["left_out"][others]]),
            labels[both],
            prior,
        )
        near_chosen[source] = (offset, slope)
        left_out["near-shrink"][test] = near_shrink(
            outputs.left_out_shipped[test], nearest["left_out"][test], prior, offset, slope
        )
        own_prior = labels[test].mean(axis=0)
        best_weight = min(
            _ORACLE_SHRINKS, key=lambda value: loss_of(shrink(outputs.left_out_shipped[test], value, own_prior), test)
        )
        left_out["oracle-shrink"][test] = shrink(outputs.left_out_shipped[test], best_weight, own_prior)
        # S's own labels, cross-fitted over S's prompt folds: what a calibrator on a user's labels could give.
        for train, held in GroupKFold(n_splits=5).split(test, groups=groups[test]):
            own_lr = fit_lr(outputs.left_out_raw[test[train]], None, labels[test[train]])
            left_out["oracle-lr"][test[held]] = own_lr(outputs.left_out_raw[test[held]], None)
        left_out["transfer"][test] = outputs.left_out_transfer[test]
        acted = source in flagged
        left_out["flagged: shrink"][test] = left_out["shrink"][test] if acted else outputs.left_out_shipped[test]
        left_out["flagged: transfer (shipped)"][test] = (
            outputs.left_out_transfer[test] if acted else outputs.left_out_shipped[test]
        )
        near_in_domain[test] = near_shrink(
            outputs.in_domain_shipped[test], nearest["in_domain"][test], prior, offset, slope
        )

    # In domain the same calibrators are chosen on every source's left-out outputs (as shipping them would).
    inverse_t, weight = choose(everything)
    in_domain = {
        "shipped": outputs.in_domain_shipped,
        "temperature": temper(outputs.in_domain_shipped, inverse_t),
        "shrink": shrink(outputs.in_domain_shipped, weight, labels.mean(axis=0)),
        "loso-lr": fit_lr(outputs.left_out_raw, None, labels)(outputs.in_domain_raw, None),
        "tie-lr": fit_lr(outputs.left_out_raw, tie_inputs, labels)(outputs.in_domain_raw, tie_inputs),
        # Per source, the function fitted without that source (above): in domain it meets the same rule.
        "near-shrink": near_in_domain,
        "oracle-shrink": outputs.in_domain_shipped,  # in domain the shipped output is already fitted to the labels
        "oracle-lr": outputs.in_domain_shipped,
        "transfer": outputs.in_domain_shipped,  # (not measured in domain: the check never flags an in-domain fold)
        "flagged: shrink": outputs.in_domain_shipped,
        "flagged: transfer (shipped)": outputs.in_domain_shipped,
    }
    scores = {}
    for name in CALIBRATIONS:
        scores[name] = {
            "in_domain": loss(in_domain[name], everything),
            "left_out": loss(left_out[name], everything),
            "in_domain_by_source": {
                s: loss(in_domain[name], np.nonzero(sources == s)[0]) for s in sorted(set(sources))
            },
            "left_out_by_source": {s: loss(left_out[name], np.nonzero(sources == s)[0]) for s in sorted(set(sources))},
            # What the in-domain calibrator chose on all left-out outputs (1 / temperature, weight of the prior).
            "chosen": {"temperature": float(inverse_t), "shrink": float(weight), "near-shrink": near_chosen}.get(name),
        }
    return scores


def mean_over_seeds(per_seed: list[dict]) -> dict:
    def mean(values):
        return round(float(np.mean(values)), 4)

    first = per_seed[0]
    return {
        "in_domain": mean([seed["in_domain"] for seed in per_seed]),
        "left_out": mean([seed["left_out"] for seed in per_seed]),
        "left_out_by_seed": [round(seed["left_out"], 4) for seed in per_seed],
        "in_domain_by_seed": [round(seed["in_domain"], 4) for seed in per_seed],
        "in_domain_by_source": {
            s: mean([seed["in_domain_by_source"][s] for seed in per_seed]) for s in first["in_domain_by_source"]
        },
        "left_out_by_source": {
            s: mean([seed["left_out_by_source"][s] for seed in per_seed]) for s in first["left_out_by_source"]
        },
        "chosen": [seed["chosen"] for seed in per_seed] if first["chosen"] is not None else None,
    }


def print_table(results: dict, sources: np.ndarray, *, markdown: bool = False) -> None:
    names = sorted(set(sources))
    short = [name.split("_")[0] for name in names]
    counts = [int((sources == name).sum()) for name in names]
    header = ["recipe", "in domain", "left out (row-weighted)"] + [
        f"{label} ({count}) in / out" for label, count in zip(short, counts, strict=True)
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, figures in results.items():
        cells = [name, f"{figures['in_domain']:.4f}", f"{figures['left_out']:.4f}"] + [
            f"{figures['in_domain_by_source'][s]:.3f} / {figures['left_out_by_source'][s]:.3f}" for s in names
        ]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines), file=sys.stdout if markdown else sys.stderr, flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
