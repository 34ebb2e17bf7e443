"""`arena predict`, `calibrate`, `evaluate` and `leaderboard`: predictions, calibrators and reports on a CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workers.cli.progress import progress_bar


def _predict_request(args, settings, *, calibration=None, raw: bool, enable_prefix_caching: bool = True):
    from workers.predictor.predictor import PredictRequest

    return PredictRequest.from_cli(
        settings,
        model=args.model,
        adapter=args.adapter,
        calibration=calibration,
        raw=raw,
        tta=args.tta,
        engine_kind=args.engine,
        enable_prefix_caching=enable_prefix_caching,
        with_votes=args.with_votes,
        saved_votes=args.votes is not None,
    )


def _predict(args, settings, dataset, request):
    """The prediction for `dataset` and the predictor that made it: judged now, or from the votes of --votes."""
    from workers.predictor.predictor import Predictor

    if args.votes:
        from workers.judge.votes import load_votes

        predictor = Predictor.for_saved_votes(request)
        return predictor.apply(load_votes(args.votes, dataset.ids), dataset.pairs), predictor
    with Predictor.open(settings, request) as predictor:
        return predictor.predict(dataset, on_progress=progress_bar(len(dataset), "judging")), predictor


def command_predict(args, settings) -> dict:
    from shared.arena_csv import read_arena_csv, write_submission
    from workers.judge.votes import save_votes

    dataset = read_arena_csv(args.input).head(args.limit)
    request = _predict_request(
        args, settings, calibration=args.calibration, raw=args.raw, enable_prefix_caching=args.prefix_cache
    )
    prediction, predictor = _predict(args, settings, dataset, request)
    result, description = prediction.judge_result, predictor.description
    probabilities, domain = prediction.probabilities, None
    figures = (description or {}).get("domain_reference")
    if figures is not None and result.prompt_nearest_cosine is not None:  # as a predict job's assembly does
        from workers.predictor.domain import checked_probabilities

        probabilities, domain = checked_probabilities(
            probabilities,
            result.prompt_nearest_cosine,
            figures,
            settings=settings,
            transfer_logprobs=result.transfer_logprobs,
        )
    write_submission(args.output, dataset.ids, probabilities, floor=settings.PROB_FLOOR)
    if args.save_votes:
        save_votes(args.save_votes, result)
    summary = {
        "submission": str(args.output),
        **prediction.summary(),
        "calibration": str(request.calibration_path) if request.calibration_path else None,
        "judge": description,
    }
    if domain is not None:
        summary["domain_check"] = domain
    if result.truncated.any():
        budget = f"MAX_MODEL_LEN={settings.MAX_MODEL_LEN}"
        if description is None:  # loaded with --votes: the judge that wrote the file set the budget
            budget = f"the token budget of the judge that wrote {args.votes}"
        elif description.get("classifier_max_length"):
            budget = f"the adapter's max length ({description['classifier_max_length']} tokens)"
        print(
            f"note: {int(result.truncated.sum())} of {len(dataset)} rows were truncated to fit {budget}"
            " (head and tail of long turns kept)",
            file=sys.stderr,
        )
    return summary


def command_calibrate(args, settings) -> dict:
    from shared.arena_csv import read_arena_csv
    from workers.common.soft_labels import multiclass_log_loss
    from workers.judge.votes import save_votes
    from workers.predictor.predictor import Predictor, calibrate_dataset

    dataset = read_arena_csv(args.input, require_labels=True).head(args.limit)
    # A calibrator is fitted on the judge's raw output: no default predictor, no adapter's own calibration.
    prediction, predictor = _predict(args, settings, dataset, _predict_request(args, settings, raw=True))
    result = prediction.judge_result
    if args.save_votes:
        save_votes(args.save_votes, result)
    calibrator = calibrate_dataset(
        dataset, result, method=args.method, description={"input": str(args.input), "judge": predictor.description}
    )
    calibrator.save(args.output)
    in_sample = Predictor(None, calibrator, tta=args.tta).apply(result, dataset.pairs).probabilities
    return {
        "calibration": str(args.output),
        "method": calibrator.method,
        "rows": len(dataset),
        "orders": result.n_orders,
        "regularisation": calibrator.regularisation,
        "inputs": calibrator.inputs,
        "raw_log_loss_in_sample": multiclass_log_loss(dataset.labels, result.raw_probabilities),
        "calibrated_log_loss_in_sample": multiclass_log_loss(dataset.labels, in_sample),
        "cv_log_loss_by_regularisation": calibrator.fitted_on.get("cv_log_loss_by_regularisation"),
    }


def command_evaluate(args, settings) -> dict:
    from shared.arena_csv import read_arena_csv, read_submission
    from workers.reports.evaluate import plot_reliability, score_predictions

    dataset = read_arena_csv(args.input, require_labels=True)
    probabilities = read_submission(args.predictions, expected_ids=dataset.ids)
    metrics = score_predictions(dataset.labels, probabilities, dataset.sources)
    plot_path = args.plot or Path(args.predictions).with_suffix(".reliability.png")
    plot_reliability(dataset.labels, probabilities, plot_path, title=f"{Path(args.predictions).name} vs labels")
    metrics["reliability_plot"] = str(plot_path)
    return metrics


def command_leaderboard(args, settings) -> dict:
    from shared.arena_csv import read_arena_csv, read_submission
    from workers.reports.leaderboard import write_dataset_leaderboards

    dataset = read_arena_csv(args.input)
    predictions = None
    if args.predictions is not None:
        predictions = read_submission(args.predictions, expected_ids=dataset.ids, exact=True)
    bar = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(total, "bootstrap", unit="round")
        bar(done, total)

    summary = write_dataset_leaderboards(
        dataset,
        args.output_dir,
        predictions=predictions,
        bootstrap=args.bootstrap,
        seed=args.seed,
        name=str(args.input),
        on_progress=on_progress,
    )
    for note in summary["leaderboard"]["notes"]:
        print(f"note: {note}", file=sys.stderr)
    agreement = summary.get("agreement")
    if agreement is not None:
        print(
            f"human vs predicted leaderboard over {agreement['models']} models: Spearman {agreement['spearman']},"
            f" Kendall {agreement['kendall']}, mean |rating difference| {agreement['mean_abs_rating_difference']}",
            file=sys.stderr,
        )
    return {"output_dir": str(args.output_dir), **summary}


def add_judge_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local model folder (default: MODEL_PATH or the embedded SmolLM2-135M)")
    parser.add_argument(
        "--adapter",
        help="PEFT adapter folder: a causal-LM LoRA (changes the votes) or a classifier judge from `arena train`",
    )
    parser.add_argument(
        "--with-votes",
        action="store_true",
        help="with a classifier adapter, also cast the base model's criterion votes (for a stacked calibrator)",
    )
    parser.add_argument("--engine", choices=("vllm", "transformers"), help="default: JUDGE_ENGINE (vllm)")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="judge in the given order only")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--votes", type=Path, help="reuse votes saved by --save-votes instead of judging")
    parser.add_argument("--save-votes", type=Path, help="also save the raw criterion votes (.npz)")


def add_predict(commands) -> None:
    predict = commands.add_parser("predict", help="write a Kaggle submission for a test CSV")
    predict.add_argument("--input", required=True, type=Path)
    predict.add_argument("--output", required=True, type=Path)
    predict.add_argument("--calibration", type=Path, help="calibrator JSON from `arena calibrate`")
    predict.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false")
    predict.add_argument(
        "--raw",
        action="store_true",
        help="the judge's uncalibrated output: criterion votes (worse than uniform on real data), or an adapter's"
        " softmax ignoring its calibration.json. Without --raw, --adapter or --calibration: the default predictor"
        " (SHARED_DIR/models/DEFAULT_PREDICTOR, a calibrated text model)",
    )
    add_judge_options(predict)
    predict.set_defaults(handler=command_predict)


def add_calibrate(commands) -> None:
    calibrate = commands.add_parser("calibrate", help="fit a calibrator on a labelled CSV")
    calibrate.add_argument("--input", required=True, type=Path)
    calibrate.add_argument("--output", required=True, type=Path)
    calibrate.add_argument("--method", choices=("logistic", "temperature"), default="logistic")
    add_judge_options(calibrate)
    calibrate.set_defaults(handler=command_calibrate)


def add_evaluate(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score a submission against a labelled CSV")
    evaluate.add_argument("--input", required=True, type=Path)
    evaluate.add_argument("--predictions", required=True, type=Path)
    evaluate.add_argument("--plot", type=Path, help="reliability diagram PNG (default: beside the predictions)")
    evaluate.set_defaults(handler=command_evaluate)


def add_leaderboard(commands) -> None:
    from workers.reports.leaderboard import DEFAULT_BOOTSTRAP, MAX_BOOTSTRAP

    leaderboard = commands.add_parser(
        "leaderboard",
        help="Bradley-Terry (Elo-scale) leaderboard of the models in an arena CSV with model_a/model_b, from its"
        " labels or from a submission for it",
    )
    leaderboard.add_argument("--input", required=True, type=Path, help="arena CSV with model_a and model_b")
    leaderboard.add_argument(
        "--predictions",
        type=Path,
        help="submission for --input (same ids): rate the models by the predicted outcomes; with labels in --input,"
        " the human leaderboard is written too and the agreement of the two printed",
    )
    leaderboard.add_argument("--output-dir", required=True, type=Path)
    leaderboard.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        help=f"resampling rounds for the 95%% intervals (0 to {MAX_BOOTSTRAP:,}; 0: no intervals)",
    )
    leaderboard.add_argument("--seed", type=int, default=0)
    leaderboard.set_defaults(handler=command_leaderboard)
