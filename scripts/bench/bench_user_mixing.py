"""What serves a user with labelled rows of their own source best: their rows alone, or mixed with ours, how weighted.

For each target source S of the labelled CSV (default: the two largest), 30% of S's prompts are held out as the
user's test set. From the rest, n rows (whole prompts, drawn at random per seed) are "the user's rows"; the other
sources' rows play "our shipped data" (S is new to them, as a user's source is). Each arm fits the text predictor's
recipe (text model + the multinomial LR calibrator on prompt-grouped out-of-fold outputs, as `POST /v1/jobs/train`
with `text_only` does) and scores S's held-out rows:

- `ours only`: no user rows (the leave-one-source-out figure; n = 0);
- `user only`: `include_shipped_data: false`;
- `user + ours w`: `include_shipped_data: true, shipped_data_weight: w` (the user's rows weigh 1 each);
- each mixed arm twice: the calibrator fitted on every training row's out-of-fold output (what ships today), and
  on the user's rows' out-of-fold outputs only (`/ cal user`).

Every text is embedded once; figures are means over --seeds (user-row draw and LightGBM/PCA seed).

    PYTHONPATH=. .venv-worker/bin/python scripts/bench/bench_user_mixing.py --seeds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generalisation import (  # noqa: E402  (the path above first)
    DEFAULT_DATA,
    cpu_name,
    embeddings_of,
    fit_rows,
    log,
    shipped_calibrator,
)

SHIPPED_WEIGHTS = (1.0, 0.3, 0.1)
TEST_FRACTION = 0.3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_DATA, help="labelled Kaggle-format CSV with `source`")
    parser.add_argument("--sources", default="llmeval2,autoj_pairwise_test", help="comma-separated target sources")
    parser.add_argument("--sizes", default="200,800,3000", help="user rows per arm (capped at what the source has)")
    parser.add_argument(
        "--weights", default=",".join(f"{w:g}" for w in SHIPPED_WEIGHTS), help="comma-separated shipped-row weights"
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)

    from shared.arena_csv import read_arena_csv
    from shared.settings import get_settings
    from workers.common.pairs import prompt_groups
    from workers.predictor.sentence_encoder import open_text_encoder
    from workers.predictor.text_model import embed_pairs

    dataset = read_arena_csv(args.input, require_labels=True)
    if dataset.sources is None:
        parser.error(f"{args.input} has no `source` column")
    sources = np.asarray(dataset.sources)
    targets = [name.strip() for name in args.sources.split(",") if name.strip()]
    if unknown := set(targets) - set(sources):
        parser.error(f"--sources: {', '.join(sorted(unknown))} not in {args.input.name}")
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    weights = tuple(float(weight) for weight in args.weights.split(",") if weight.strip())
    if not weights or min(weights) <= 0:
        parser.error("--weights: one or more positive numbers, for example 0.1,0.05")
    settings = get_settings()
    encoder = open_text_encoder(settings, settings.text_encoder_path)
    started = time.perf_counter()
    embeddings = embed_pairs(dataset.pairs, encoder)
    print(f"embedded in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    context = {
        "pairs": dataset.pairs,
        "labels": dataset.labels,
        "groups": prompt_groups(dataset.pairs),
        "embeddings": embeddings,
        "encoder": encoder,
    }

    results: dict[str, dict] = {}
    for target in targets:
        per_seed: list[dict[str, float]] = []
        for seed in range(args.seeds):
            begun = time.perf_counter()
            per_seed.append(score_target(target, sizes, weights, seed=seed, sources=sources, **context))
            print(f"{target} seed {seed}: {time.perf_counter() - begun:.0f}s", file=sys.stderr, flush=True)
            print(json.dumps(per_seed[-1], indent=1), file=sys.stderr, flush=True)
        results[target] = {
            arm: round(float(np.mean([seed[arm] for seed in per_seed if arm in seed])), 4) for arm in per_seed[0]
        }
    print_table(results)
    if args.json:
        summary = {
            "input": str(args.input),
            "seeds": args.seeds,
            "cpu": cpu_name(),
            "date": time.strftime("%Y-%m-%d"),
            "results": results,
        }
        args.json.write_text(json.dumps(summary, indent=1))


def score_target(
    target: str,
    sizes: list[int],
    shipped_weights: tuple[float, ...],
    *,
    seed: int,
    sources,
    pairs,
    labels,
    groups,
    embeddings,
    encoder,
):
    """Every arm's log loss on the target's held-out prompts, for one seed."""
    from workers.common.soft_labels import multiclass_log_loss

    rng = np.random.default_rng(seed)
    own = np.nonzero(sources == target)[0]
    ours = np.nonzero(sources != target)[0]
    prompts = rng.permutation(np.unique(groups[own]))
    test_prompts = set(prompts[: int(round(TEST_FRACTION * len(prompts)))].tolist())
    test = np.array([row for row in own if groups[row] in test_prompts])
    pool_prompts = [prompt for prompt in prompts if prompt not in test_prompts]
    pool_rows = {prompt: [row for row in own if groups[row] == prompt] for prompt in pool_prompts}
    test_pairs = [pairs[row] for row in test]

    def fit(rows: np.ndarray, weights: np.ndarray | None, calibrate_on: np.ndarray) -> dict[str, float]:
        """The recipe on `rows`; the held-out log loss with the calibrator on all rows and on `calibrate_on` only."""
        fitted = fit_rows(
            rows, seed=seed, pairs=pairs, labels=labels, groups=groups, embeddings=embeddings, encoder=encoder,
            weights=weights,
        )  # fmt: skip
        raw = log(fitted.model.probabilities(test_pairs, embeddings_of(embeddings, test)))
        figures = {}
        for name, chosen in (("cal all", np.arange(len(rows))), ("cal user", calibrate_on)):
            if len(chosen) == 0:
                continue
            calibrator = shipped_calibrator(
                [pairs[rows[i]] for i in chosen], labels[rows[chosen]], fitted.out_of_fold[chosen]
            )
            figures[name] = multiclass_log_loss(labels[test], calibrator.predict(None, test_pairs, text_logprobs=raw))
        return figures

    scores = {"ours only": fit(ours, None, np.array([], dtype=int))["cal all"]}
    scores["held-out rows"] = float(len(test))
    for size in sizes:
        user = []
        for prompt in pool_prompts:
            if len(user) >= size:
                break
            user.extend(pool_rows[prompt])
        user = np.array(user)
        label = f"{size}"
        if size > len(user):  # the source has fewer: every pool row (a count that varies a little with the draw)
            label = "all"
            scores["all: user rows"] = float(len(user))
        scores[f"{label} / user only"] = fit(user, None, np.arange(len(user)))["cal all"]
        for weight in shipped_weights:
            rows = np.concatenate([user, ours])
            weights = np.concatenate([np.ones(len(user)), np.full(len(ours), weight)])
            figures = fit(rows, weights, np.arange(len(user)))
            scores[f"{label} / user + ours w={weight:g}"] = figures["cal all"]
            scores[f"{label} / user + ours w={weight:g} / cal user"] = figures["cal user"]
        if size > len(user):
            break  # the pool is used up: larger sizes would repeat this arm
    return scores


def print_table(results: dict[str, dict]) -> None:
    targets = list(results)
    arms = list(dict.fromkeys(arm for figures in results.values() for arm in figures))
    lines = ["| user rows / recipe | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for arm in arms:
        cells = [f"{results[t][arm]:.4f}" if arm in results[t] else "" for t in targets]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
