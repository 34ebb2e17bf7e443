"""Benchmark the text model (predictor/text_model.py) on a labelled file: grouped 5-fold CV and a grouped holdout.

Prints JSON: embedding and fitting time, the out-of-fold log loss of a fit on every row (5 folds grouped by
prompt), and the log loss on a holdout of prompt groups (the `arena split` rule, same fraction and seed) of a fit
on the rest, both per source.

    PYTHONPATH=. .venv-worker/bin/python scripts/bench/bench_text_model.py --input ../shared/data/preference_pairs.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shared.arena_csv import read_arena_csv
from shared.settings import get_settings
from workers.common.hardware import prepare_process_environment
from workers.common.pairs import prompt_groups
from workers.common.soft_labels import multiclass_log_loss
from workers.predictor.sentence_encoder import open_text_encoder
from workers.predictor.text_model import embed_pairs, fit_text_model
from workers.training.splits import holdout_mask

prepare_process_environment()  # before torch loads (the modules above import it lazily), as the worker does


def _by_source(labels: np.ndarray, probabilities: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    return {
        str(source): round(multiclass_log_loss(labels[sources == source], probabilities[sources == source]), 4)
        for source in np.unique(sources)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="labelled Kaggle-format CSV")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default=None, help="sentence-encoder folder (default: TEXT_ENCODER_PATH)")
    args = parser.parse_args()

    dataset = read_arena_csv(args.input, require_labels=True)
    frame = pd.read_csv(args.input, dtype=str, keep_default_na=False)
    sources = frame["source"].to_numpy() if "source" in frame else np.array(["all"] * len(dataset))
    pairs, labels = dataset.pairs, dataset.labels
    groups = prompt_groups(pairs)

    encoder = open_text_encoder(get_settings(), args.encoder or get_settings().text_encoder_path)
    started = time.perf_counter()
    embeddings = embed_pairs(pairs, encoder)
    embed_seconds = time.perf_counter() - started

    started = time.perf_counter()
    everything = fit_text_model(pairs, labels, embeddings, groups=groups, seed=args.seed)
    fit_seconds = time.perf_counter() - started

    held = holdout_mask(groups, holdout_fraction=args.holdout_fraction, seed=args.seed)
    train_rows, test_rows = np.nonzero(~held)[0], np.nonzero(held)[0]

    def rows(selected: np.ndarray):
        return type(embeddings)(
            embeddings.prompt[selected], embeddings.response_a[selected], embeddings.response_b[selected]
        )

    train_fit = fit_text_model(
        [pairs[row] for row in train_rows], labels[train_rows], rows(train_rows), groups=groups[train_rows]
    )
    holdout_probabilities = train_fit.model.probabilities([pairs[row] for row in test_rows], rows(test_rows))
    print(
        json.dumps(
            {
                "rows": len(pairs),
                "encoder": encoder.name,
                "device": encoder.device,
                "embed_seconds": round(embed_seconds, 1),
                "fit_seconds_all_rows": round(fit_seconds, 1),
                "cv5_grouped_log_loss": round(everything.model.fitted_on["cv_log_loss"], 4),
                "cv5_by_source": _by_source(labels, everything.out_of_fold, sources),
                "holdout_rows": len(test_rows),
                "holdout_log_loss": round(multiclass_log_loss(labels[test_rows], holdout_probabilities), 4),
                "holdout_accuracy": round(
                    float((holdout_probabilities.argmax(1) == labels[test_rows].argmax(1)).mean()), 4
                ),
                "holdout_by_source": _by_source(labels[test_rows], holdout_probabilities, sources[test_rows]),
                "boosting_rounds": everything.model.fitted_on["rounds"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
