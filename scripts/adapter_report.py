"""Held-out log loss of each part of the judge, alone and stacked, so the gain of each is visible.

    # the text predictor fitted on the train split, the raw criterion votes of the held-out rows
    scripts/arena train --text-only --input var/split/train.csv --output-dir var/runs/text-train
    scripts/arena predict --input var/split/holdout_test.csv --output raw.csv --raw --save-votes votes.npz
    # optionally a trained LoRA judge: scripts/arena predict ... --adapter ADAPTER --save-votes adapter.npz
    .venv-worker/bin/python scripts/adapter_report.py --input var/split/holdout.csv \
        --text-predictor var/runs/text-train --votes votes.npz [--adapter ADAPTER --adapter-votes adapter.npz]

Rows: each part alone (the text predictor as shipped, with its own calibrator fitted on train-side rows only;
the adapter's raw softmax; the adapter's shipped stack), then calibrators fitted on the held-out rows
themselves by 5-fold cross-validation grouped by prompt: length only, votes + length, text model alone, text
model + votes, text model + adapter, adapter + length, adapter + votes + length. A part earns its place when
adding it lowers the cross-validated log loss by more than the noise (about ±0.005 on 700 rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.arena_csv import read_arena_csv  # noqa: E402
from shared.settings import get_settings  # noqa: E402
from workers.common.pairs import prompt_groups  # noqa: E402
from workers.common.soft_labels import multiclass_log_loss  # noqa: E402
from workers.judge.votes import load_votes, softmax  # noqa: E402
from workers.predictor.calibration import fit_calibrator  # noqa: E402
from workers.predictor.predictor import Predictor, PredictRequest  # noqa: E402
from workers.reports.evaluate import score_predictions  # noqa: E402


def cross_validated(
    pairs, labels, *, votes=None, adapter_logits=None, text_logprobs=None, with_length=True, folds: int = 5
) -> np.ndarray:
    """Out-of-fold probabilities of a logistic calibrator over the given inputs, folds grouped by prompt."""
    from sklearn.model_selection import GroupKFold

    def rows(array, index):
        return None if array is None else array[index]

    probabilities = np.zeros_like(labels)
    for train_rows, test_rows in GroupKFold(n_splits=folds).split(labels, groups=prompt_groups(pairs)):
        calibrator = fit_calibrator(
            rows(votes, train_rows),
            [pairs[row] for row in train_rows],
            labels[train_rows],
            adapter_logits=rows(adapter_logits, train_rows),
            text_logprobs=rows(text_logprobs, train_rows),
            with_length=with_length,
        )
        probabilities[test_rows] = calibrator.predict(
            rows(votes, test_rows),
            [pairs[row] for row in test_rows],
            adapter_logits=rows(adapter_logits, test_rows),
            text_logprobs=rows(text_logprobs, test_rows),
        )
    return probabilities


def text_predictor_output(predictor_dir: Path, dataset) -> tuple[np.ndarray, np.ndarray]:
    """The text predictor's raw log-probabilities and its shipped (calibrated) probabilities."""
    settings = get_settings()
    with Predictor.open(settings, PredictRequest.from_cli(settings, adapter=predictor_dir, tta=False)) as predictor:
        prediction = predictor.predict(dataset)
    return prediction.judge_result.text_logprobs, prediction.probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, type=Path, help="labelled holdout CSV")
    parser.add_argument("--text-predictor", type=Path, help="a text predictor folder fitted without these rows")
    parser.add_argument("--votes", type=Path, help="--save-votes file of `predict --raw` (5-criteria votes)")
    parser.add_argument("--adapter", type=Path, help="a LoRA judge folder (for its calibration.json)")
    parser.add_argument("--adapter-votes", type=Path, help="--save-votes file of `predict --adapter`")
    args = parser.parse_args()
    if (args.adapter is None) != (args.adapter_votes is None):
        parser.error("--adapter and --adapter-votes go together")

    dataset = read_arena_csv(args.input, require_labels=True)
    pairs, labels = dataset.pairs, dataset.labels
    votes = load_votes(args.votes, dataset.ids).vote_logprobs if args.votes else None
    adapter_logits = text_logprobs = None
    parts: dict[str, np.ndarray] = {}
    if args.text_predictor:
        text_logprobs, parts["text predictor as shipped (its calibrator, train-side rows)"] = text_predictor_output(
            args.text_predictor, dataset
        )
    if args.adapter:
        saved = load_votes(args.adapter_votes, dataset.ids)
        adapter_logits = saved.adapter_logits
        parts["adapter alone (raw, both orders averaged)"] = softmax(adapter_logits).mean(axis=1)
        shipped = Predictor.for_saved_votes(
            PredictRequest.from_cli(get_settings(), adapter=args.adapter, tta=saved.n_orders == 2, saved_votes=True)
        )
        stack = " + ".join(shipped.calibrator.inputs)
        parts[f"adapter's shipped stack ({stack})"] = shipped.apply(saved, pairs).probabilities
    constant = np.zeros((len(pairs), 2, 3))  # constant features: the calibrator then reads lengths only
    parts["length features only (CV on holdout)"] = cross_validated(pairs, labels, adapter_logits=constant)
    if votes is not None:
        parts["5-criteria votes + length (CV on holdout)"] = cross_validated(pairs, labels, votes=votes)
    if text_logprobs is not None:
        parts["text model alone (CV on holdout)"] = cross_validated(
            pairs, labels, text_logprobs=text_logprobs, with_length=False
        )
        if votes is not None:
            parts["text model + votes (CV on holdout)"] = cross_validated(
                pairs, labels, votes=votes, text_logprobs=text_logprobs, with_length=False
            )
        if adapter_logits is not None:
            parts["text model + adapter (CV on holdout)"] = cross_validated(
                pairs, labels, adapter_logits=adapter_logits, text_logprobs=text_logprobs, with_length=False
            )
    if adapter_logits is not None:
        parts["adapter + length (CV on holdout)"] = cross_validated(pairs, labels, adapter_logits=adapter_logits)
        if votes is not None:
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
