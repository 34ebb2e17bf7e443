"""Validation log loss of each part of the judge on a labelled holdout file, so the gain of each is visible.

    scripts/arena predict --input HOLDOUT_TEST.csv --output sub.csv --adapter ADAPTER --save-votes adapter.npz
    .venv-worker/bin/python scripts/adapter_report.py --input HOLDOUT.csv --adapter ADAPTER \
        --adapter-votes adapter.npz [--votes criterion_votes.npz]

Rows: the adapter alone (raw softmax of both orders), the text model alone (when the adapter has one), the
shipped stack, i.e. what `predict --adapter` writes (its calibrator was fitted on the adapter's own validation
split: no holdout label is used), and calibrators fitted on the holdout itself by
5-fold cross-validation grouped by prompt: length features only, criterion votes + length, adapter + length,
adapter + votes + length.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.arena_csv import read_arena_csv  # noqa: E402
from workers.judge.votes import (
    load_votes,  # noqa: E402
    softmax,  # noqa: E402
)
from workers.stacking.calibration import Calibrator, fit_calibrator, multiclass_log_loss, prompt_groups  # noqa: E402
from workers.stacking.evaluate import score_predictions  # noqa: E402


def cross_validated(pairs, labels, *, votes=None, adapter_logits=None, folds: int = 5) -> np.ndarray:
    """Out-of-fold probabilities of a logistic calibrator, folds grouped by prompt."""
    from sklearn.model_selection import GroupKFold

    probabilities = np.zeros_like(labels)
    for train_rows, test_rows in GroupKFold(n_splits=folds).split(labels, groups=prompt_groups(pairs)):
        calibrator = fit_calibrator(
            None if votes is None else votes[train_rows],
            [pairs[row] for row in train_rows],
            labels[train_rows],
            adapter_logits=None if adapter_logits is None else adapter_logits[train_rows],
        )
        probabilities[test_rows] = calibrator.predict(
            None if votes is None else votes[test_rows],
            [pairs[row] for row in test_rows],
            adapter_logits=None if adapter_logits is None else adapter_logits[test_rows],
        )
    return probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, type=Path, help="labelled holdout CSV")
    parser.add_argument("--adapter", required=True, type=Path, help="the adapter folder (for its calibration.json)")
    parser.add_argument("--adapter-votes", required=True, type=Path, help="--save-votes file of predict --adapter")
    parser.add_argument("--votes", type=Path, help="--save-votes file of the 5-criteria judge (base model)")
    args = parser.parse_args()

    dataset = read_arena_csv(args.input, require_labels=True)
    pairs, labels = dataset.pairs, dataset.labels
    saved = load_votes(args.adapter_votes, dataset.ids)
    adapter_logits, text_logprobs = saved.adapter_logits, saved.text_logprobs
    parts: dict[str, np.ndarray] = {"adapter alone (raw, both orders averaged)": softmax(adapter_logits).mean(axis=1)}
    if text_logprobs is not None:
        parts["text model alone (its text_model.json)"] = np.exp(text_logprobs)
    shipped = Calibrator.load(args.adapter / "calibration.json")
    shipped_inputs = " + ".join(shipped.inputs)
    parts[f"shipped: {shipped_inputs}, its calibrator (fitted on train-side validation)"] = shipped.predict(
        None, pairs, adapter_logits=adapter_logits, text_logprobs=text_logprobs
    )
    zeros = np.zeros_like(adapter_logits)  # constant features: the calibrator then reads lengths only
    parts["length features only (CV on holdout)"] = cross_validated(pairs, labels, adapter_logits=zeros)
    parts["adapter + length (CV on holdout)"] = cross_validated(pairs, labels, adapter_logits=adapter_logits)
    if args.votes:
        votes = load_votes(args.votes, dataset.ids).vote_logprobs
        parts["5-criteria votes + length (CV on holdout)"] = cross_validated(pairs, labels, votes=votes)
        parts["adapter + votes + length (CV on holdout)"] = cross_validated(
            pairs, labels, votes=votes, adapter_logits=adapter_logits
        )
    report = {}
    for name, probabilities in parts.items():
        scored = score_predictions(labels, probabilities, dataset.sources)
        report[name] = {
            "log_loss": round(multiclass_log_loss(labels, probabilities), 4),
            "accuracy": round(scored["accuracy"], 4),
            "per_source_log_loss": {
                source: round(figures["log_loss"], 4) for source, figures in scored.get("per_source", {}).items()
            },
        }
    print(json.dumps({"rows": len(pairs), "parts": report}, indent=1))


if __name__ == "__main__":
    main()
