"""What an encoder backend costs in held-out log loss, paired over LightGBM seeds (issue 21: within 0.003).

One held-out split (the `arena split` rule: prompt groups, --holdout-fraction, --split-seed), each backend's
embeddings computed once, then the text model fitted on the train part with every seed in --fit-seeds and scored
on the held-out part, calibrated, as `arena train --text-only --seed S` then `arena predict` would. A single seed
moves the held-out figure by up to ~0.02 on 723 rows, so the backends are compared seed by seed: the mean paired
difference and its standard error. Prints one JSON object.

    PYTHONPATH=. .venv-worker/bin/python scripts/bench/bench_encoder_quality.py --fit-seeds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from workers.common.hardware import prepare_process_environment  # noqa: E402  (the path above first)

prepare_process_environment()
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "preference_pairs.csv"
MAX_FIT_SEEDS = 50


def paired_summary(reference: list[float], candidate: list[float]) -> dict:
    """Mean of candidate − reference over seeds, its standard error, and how many seeds the candidate was worse."""
    differences = np.asarray(candidate) - np.asarray(reference)
    error = float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("nan")
    return {
        "mean_difference": round(float(differences.mean()), 4),
        "standard_error": round(error, 4),
        "seeds_worse": int((differences > 0).sum()),
        "seeds": len(differences),
    }


def main(argv: list[str] | None = None) -> None:
    from workers.predictor.sentence_encoder import ENCODER_BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_DATA, help="labelled Kaggle-format CSV")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--fit-seeds", type=int, default=10, help=f"LightGBM seeds 0..N-1 (at most {MAX_FIT_SEEDS})")
    parser.add_argument(
        "--backends", default="torch,onnx-int8", help="comma-separated; the first is the reference the others face"
    )
    args = parser.parse_args(argv)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not backends or set(backends) - set(ENCODER_BACKENDS):
        parser.error(f"--backends: choose from {', '.join(ENCODER_BACKENDS)}")
    if not 1 <= args.fit_seeds <= MAX_FIT_SEEDS:
        parser.error(f"--fit-seeds: choose 1 to {MAX_FIT_SEEDS}")

    from shared.arena_csv import read_arena_csv
    from shared.settings import get_settings
    from workers.common.pairs import prompt_groups
    from workers.common.soft_labels import multiclass_log_loss
    from workers.predictor.sentence_encoder import open_text_encoder
    from workers.predictor.text_model import PairEmbeddings, embed_pairs, fit_text_model
    from workers.training.splits import holdout_mask

    settings = get_settings()
    dataset = read_arena_csv(args.input, require_labels=True)
    pairs, labels = dataset.pairs, dataset.labels
    groups = prompt_groups(pairs)
    held = holdout_mask(groups, holdout_fraction=args.holdout_fraction, seed=args.split_seed)
    train_rows, test_rows = np.nonzero(~held)[0], np.nonzero(held)[0]
    train_pairs, test_pairs = [pairs[row] for row in train_rows], [pairs[row] for row in test_rows]

    def rows(embeddings: PairEmbeddings, selected: np.ndarray) -> PairEmbeddings:
        return PairEmbeddings(
            embeddings.prompt[selected], embeddings.response_a[selected], embeddings.response_b[selected]
        )

    losses: dict[str, list[float]] = {}
    timings: dict[str, float] = {}
    for backend in backends:
        encoder = open_text_encoder(settings, settings.text_encoder_path, backend=backend)
        started = time.perf_counter()
        embeddings = embed_pairs(pairs, encoder)
        timings[backend] = round(time.perf_counter() - started, 1)
        losses[backend] = []
        for seed in range(args.fit_seeds):
            fitted = fit_text_model(
                train_pairs,
                labels[train_rows],
                rows(embeddings, train_rows),
                groups=groups[train_rows],
                seed=seed,
                encoder_backend=encoder.backend,
            )
            probabilities = fitted.model.probabilities(test_pairs, rows(embeddings, test_rows))
            losses[backend].append(round(multiclass_log_loss(labels[test_rows], probabilities), 4))
            print(f"  {backend} seed {seed}: {losses[backend][-1]:.4f}", file=sys.stderr, flush=True)

    reference = backends[0]
    print(
        json.dumps(
            {
                "train_rows": len(train_rows),
                "holdout_rows": len(test_rows),
                "split_seed": args.split_seed,
                "embed_seconds": timings,
                "holdout_log_loss_by_seed": losses,
                "mean": {backend: round(float(np.mean(values)), 4) for backend, values in losses.items()},
                f"against_{reference}": {
                    backend: paired_summary(losses[reference], losses[backend]) for backend in backends[1:]
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
