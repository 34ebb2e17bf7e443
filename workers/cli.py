"""`arena`: the command line of arena-pref (run through scripts/arena, in the worker environment)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError)


def _progress_bar(total: int, description: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="pair", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _open_judge(args, settings, *, enable_prefix_caching: bool = True):
    from workers.pipelines.predict import Judge

    return Judge.open(
        settings,
        model_path=args.model,
        adapter_dir=args.adapter,
        engine_kind=args.engine,
        enable_prefix_caching=enable_prefix_caching,
    )


def _judge_or_load(args, dataset, settings, *, enable_prefix_caching: bool = True):
    from workers.pipelines.predict import load_votes

    if getattr(args, "votes", None):
        return load_votes(args.votes, dataset.ids), None
    judge = _open_judge(args, settings, enable_prefix_caching=enable_prefix_caching)
    try:
        result = judge.judge(dataset.pairs, tta=args.tta, on_progress=_progress_bar(len(dataset), "judging"))
    finally:
        judge.close()
    return result, judge.description


def command_predict(args, settings) -> dict:
    from workers.pipelines.calibration import Calibrator
    from workers.pipelines.data_io import read_arena_csv
    from workers.pipelines.predict import Prediction, save_votes, write_prediction

    dataset = read_arena_csv(args.input).head(args.limit)
    calibrator = Calibrator.load(args.calibration) if args.calibration else None
    if calibrator is not None and calibrator.n_orders != (2 if args.tta else 1):
        # Fail before spending minutes on judging.
        hint = "drop --no-tta" if calibrator.n_orders == 2 else "pass --no-tta"
        raise ValueError(f"{args.calibration} was fitted with {calibrator.n_orders} order(s) per pair; {hint}")
    result, description = _judge_or_load(args, dataset, settings, enable_prefix_caching=args.prefix_cache)
    probabilities = (
        result.raw_probabilities if calibrator is None else calibrator.predict(result.vote_logprobs, dataset.pairs)
    )
    prediction = Prediction(probabilities=probabilities, judge_result=result, calibrated=calibrator is not None)
    write_prediction(args.output, dataset, prediction, floor=settings.PROB_FLOOR)
    if args.save_votes:
        save_votes(args.save_votes, result)
    summary = {"submission": str(args.output), **prediction.summary(), "judge": description}
    if result.truncated.any():
        print(
            f"note: {int(result.truncated.sum())} of {len(dataset)} rows were truncated to fit MAX_MODEL_LEN="
            f"{settings.MAX_MODEL_LEN} (head and tail of long turns kept)",
            file=sys.stderr,
        )
    return summary


def command_calibrate(args, settings) -> dict:
    from workers.pipelines.data_io import read_arena_csv
    from workers.pipelines.predict import calibrate_dataset, save_votes

    dataset = read_arena_csv(args.input, require_labels=True).head(args.limit)
    result, description = _judge_or_load(args, dataset, settings)
    if args.save_votes:
        save_votes(args.save_votes, result)
    calibrator = calibrate_dataset(
        dataset, result, method=args.method, description={"input": str(args.input), "judge": description}
    )
    calibrator.save(args.output)
    from workers.pipelines.calibration import multiclass_log_loss

    return {
        "calibration": str(args.output),
        "method": calibrator.method,
        "rows": len(dataset),
        "orders": result.n_orders,
        "regularisation": calibrator.regularisation,
        "raw_vote_log_loss_in_sample": multiclass_log_loss(dataset.labels, result.raw_probabilities),
        "calibrated_log_loss_in_sample": multiclass_log_loss(
            dataset.labels, calibrator.predict(result.vote_logprobs, dataset.pairs)
        ),
        "cv_log_loss_by_regularisation": calibrator.fitted_on.get("cv_log_loss_by_regularisation"),
    }


def command_evaluate(args, settings) -> dict:
    from workers.pipelines.data_io import read_arena_csv, read_submission
    from workers.pipelines.evaluate import plot_reliability, score_predictions

    dataset = read_arena_csv(args.input, require_labels=True)
    probabilities = read_submission(args.predictions, expected_ids=dataset.ids)
    metrics = score_predictions(dataset.labels, probabilities, dataset.sources)
    plot_path = args.plot or Path(args.predictions).with_suffix(".reliability.png")
    plot_reliability(dataset.labels, probabilities, plot_path, title=f"{Path(args.predictions).name} vs labels")
    metrics["reliability_plot"] = str(plot_path)
    return metrics


def command_split(args, settings) -> dict:
    from workers.pipelines.splits import split_file

    return split_file(args.input, args.output_dir, holdout_fraction=args.holdout, seed=args.seed)


def command_setup_model(args, settings) -> dict:
    from workers.pipelines.model_setup import convert_embedded_model

    path = convert_embedded_model(settings.default_model_dir, force=args.force)
    return {"model": str(path)}


def command_not_available(args, settings) -> dict:
    raise NotAvailableError(
        f"`arena {args.command}` is not available yet: it arrives with the {args.command} job"
        " (see the open issues); nothing was run"
    )


class NotAvailableError(RuntimeError):
    pass


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local model folder (default: MODEL_PATH or the embedded SmolLM2-135M)")
    parser.add_argument("--adapter", help="PEFT LoRA adapter folder to apply to the model")
    parser.add_argument("--engine", choices=("vllm", "transformers"), help="default: JUDGE_ENGINE (vllm)")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="judge in the given order only")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--votes", type=Path, help="reuse votes saved by --save-votes instead of judging")
    parser.add_argument("--save-votes", type=Path, help="also save the raw criterion votes (.npz)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Pairwise preference judge (A / B / tie).")
    parser.add_argument("-v", "--verbose", action="store_true", help="show engine logs")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="write a Kaggle submission for a test CSV")
    predict.add_argument("--input", required=True, type=Path)
    predict.add_argument("--output", required=True, type=Path)
    predict.add_argument("--calibration", type=Path, help="calibrator JSON from `arena calibrate`")
    predict.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false")
    _add_judge_options(predict)
    predict.set_defaults(handler=command_predict)

    calibrate = commands.add_parser("calibrate", help="fit a calibrator on a labelled CSV")
    calibrate.add_argument("--input", required=True, type=Path)
    calibrate.add_argument("--output", required=True, type=Path)
    calibrate.add_argument("--method", choices=("logistic", "temperature"), default="logistic")
    _add_judge_options(calibrate)
    calibrate.set_defaults(handler=command_calibrate)

    evaluate = commands.add_parser("evaluate", help="score a submission against a labelled CSV")
    evaluate.add_argument("--input", required=True, type=Path)
    evaluate.add_argument("--predictions", required=True, type=Path)
    evaluate.add_argument("--plot", type=Path, help="reliability diagram PNG (default: beside the predictions)")
    evaluate.set_defaults(handler=command_evaluate)

    split = commands.add_parser("split", help="train/holdout split of a labelled CSV, grouped by prompt")
    split.add_argument("--input", required=True, type=Path)
    split.add_argument("--output-dir", required=True, type=Path)
    split.add_argument("--holdout", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(handler=command_split)

    setup_model = commands.add_parser("setup-model", help="convert the embedded SmolLM2-135M into SHARED_DIR/models")
    setup_model.add_argument("--force", action="store_true")
    setup_model.set_defaults(handler=command_setup_model)

    for name in ("train", "synth"):
        later = commands.add_parser(name, help=f"{name} job (not available yet)")
        later.set_defaults(handler=command_not_available)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, _unknown = build_parser().parse_known_args(argv)
    if _unknown and args.command not in ("train", "synth"):
        build_parser().parse_args(argv)  # let argparse report the unknown options
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from shared.settings import get_settings
    from workers.pipelines.calibration import CalibrationError
    from workers.pipelines.data_io import DataFormatError
    from workers.pipelines.engines import ModelNotFoundError

    try:
        settings = get_settings()
        summary = args.handler(args, settings)
    except (DataFormatError, CalibrationError, ModelNotFoundError, NotAvailableError, *USER_ERRORS) as exc:
        print(f"arena {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
