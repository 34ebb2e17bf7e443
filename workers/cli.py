"""`arena`: the command line of arena-pref (run through scripts/arena, in the worker environment)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from shared.errors import UserError

# A command line names its own files and options: beside UserError (what the jobs fail on at once), a bad value
# or a missing path given here is the user's to fix too.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, ValueError, FileNotFoundError)


def _progress_bar(total: int, description: str, *, unit: str = "pair"):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


# What each stage of fitting a text predictor counts (workers/training/text_predictor.py).
TEXT_PREDICTOR_STAGE_UNITS = {"embedding": "text", "fitting": "booster"}


def _stage_bars(prefix: str = ""):
    """A progress bar per stage of a text-predictor fit, each opened when its stage reports first."""
    bars: dict = {}

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            label = f"{prefix}{stage}"
            bars[stage] = _progress_bar(total, label, unit=TEXT_PREDICTOR_STAGE_UNITS.get(stage, "step"))
        bars[stage](done, total)

    return on_stage


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
        return predictor.predict(dataset, on_progress=_progress_bar(len(dataset), "judging")), predictor


def command_predict(args, settings) -> dict:
    from shared.arena_csv import read_arena_csv, write_submission
    from workers.judge.votes import save_votes

    dataset = read_arena_csv(args.input).head(args.limit)
    request = _predict_request(
        args, settings, calibration=args.calibration, raw=args.raw, enable_prefix_caching=args.prefix_cache
    )
    prediction, predictor = _predict(args, settings, dataset, request)
    result, description = prediction.judge_result, predictor.description
    write_submission(args.output, dataset.ids, prediction.probabilities, floor=settings.PROB_FLOOR)
    if args.save_votes:
        save_votes(args.save_votes, result)
    summary = {
        "submission": str(args.output),
        **prediction.summary(),
        "calibration": str(request.calibration_path) if request.calibration_path else None,
        "judge": description,
    }
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
            bar = _progress_bar(total, "bootstrap", unit="round")
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


def command_split(args, settings) -> dict:
    from workers.training.splits import split_file

    return split_file(args.input, args.output_dir, holdout_fraction=args.holdout, seed=args.seed)


def command_setup_model(args, settings) -> dict:
    from workers.judge.model_setup import convert_embedded_model
    from workers.predictor.sentence_encoder import install_text_encoder

    path = convert_embedded_model(settings.default_model_dir, force=args.force)
    try:
        encoder = str(install_text_encoder(settings.default_text_encoder_dir, force=args.force))
    except FileNotFoundError as exc:  # e.g. a GPU image without the MiniLM wheel: train with --no-text-model
        encoder = f"not installed: {exc}"
    return {"model": str(path), "text_encoder": encoder}


def command_setup_default(args, settings) -> dict:
    """Fit the default predictor on DEFAULT_TRAIN_CSV unless the one there is current (same CSV, loadable)."""
    from workers.predictor.sentence_encoder import default_device, resolve_backend
    from workers.training.text_predictor import fit_text_predictor, text_predictor_is_current

    inputs = [Path(args.input or settings.DEFAULT_TRAIN_CSV)]
    if not inputs[0].is_file() and args.skip_missing:
        print(
            f"setup-default: {inputs[0]} not found, no default predictor fitted: plain predict requests are refused"
            " until one exists (set DEFAULT_TRAIN_CSV to a labelled arena CSV and run `arena setup-default`)",
            file=sys.stderr,
        )
        return {"output_dir": str(settings.default_predictor_dir), "fitted": False, "reason": "no DEFAULT_TRAIN_CSV"}
    if not inputs[0].is_file():
        raise FileNotFoundError(
            f"{inputs[0]} not found: set DEFAULT_TRAIN_CSV (or --input) to a labelled arena CSV to fit the default"
            " predictor on"
        )
    output_dir = settings.default_predictor_dir
    backend = resolve_backend(settings.TEXT_ENCODER_BACKEND, args.device or default_device())
    if not args.force and text_predictor_is_current(output_dir, inputs=inputs, encoder_backend=backend):
        return {"output_dir": str(output_dir), "fitted": False, "reason": "current (same CSV, this version)"}
    metrics = fit_text_predictor(
        inputs=inputs,
        output_dir=output_dir,
        text_encoder=settings.text_encoder_path,
        seed=0,
        device=args.device,
        on_stage=_stage_bars("default predictor: "),
    )
    return {"output_dir": str(output_dir), "fitted": True, **metrics}


def _training_sources(args) -> list:
    from workers.training.config import TrainingSource

    weights = args.weight or []
    if len(weights) > len(args.input):
        raise ValueError(f"{len(weights)} --weight values for {len(args.input)} --input files; give at most one each")
    weights = weights + [1.0] * (len(args.input) - len(weights))
    return [TrainingSource(Path(path), weight) for path, weight in zip(args.input, weights, strict=True)]


def command_stack(args, settings) -> dict:
    from workers.training.stack import restack_adapter

    encoder = None if args.no_text_model else (args.text_encoder or settings.text_encoder_path)
    return restack_adapter(args.adapter, sources=_training_sources(args), text_encoder=encoder)


def command_train(args, settings) -> dict:
    from workers.training.config import TrainConfig
    from workers.training.trainer import train_judge

    if args.text_only:
        return _train_text_predictor(args, settings)

    config = TrainConfig(
        sources=_training_sources(args),
        output_dir=args.output_dir,
        base_model=args.base_model or settings.judge_model_path,
        validation_path=args.validation,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=tuple(args.target_modules.split(",")),
        lora_top_layers=args.lora_top_layers,
        epochs=args.epochs,
        learning_rate=args.lr,
        head_learning_rate=args.head_lr,
        max_length=args.max_length,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        seed=args.seed,
        max_steps=args.max_steps,
        time_budget_s=args.time_budget_min * 60 if args.time_budget_min else None,
        val_fraction=args.val_fraction,
        max_val_rows=args.max_val_rows,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        patience=args.patience,
        threads=args.threads,
        device=args.device,
        text_encoder=None if args.no_text_model else (args.text_encoder or settings.text_encoder_path),
    )
    bar = None

    def on_progress(progress) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=progress.total_steps, desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)
        bar.total = progress.total_steps
        bar.update(progress.step - bar.n)
        postfix = {"epoch": progress.epoch, "loss": f"{progress.train_loss:.3f}"}
        if progress.best_val_log_loss is not None:
            postfix["best_val"] = f"{progress.best_val_log_loss:.4f}"
        bar.set_postfix(postfix, refresh=False)

    metrics = train_judge(config, on_progress=on_progress)
    if bar is not None:
        bar.close()
    return {key: value for key, value in metrics.items() if key not in ("history", "config")} | {
        "output_dir": str(args.output_dir)
    }


def _train_text_predictor(args, settings) -> dict:
    from workers.training.text_predictor import fit_text_predictor

    if args.weight or args.validation or args.no_text_model:
        raise ValueError("--text-only takes --input, --output-dir, --seed, --device and --text-encoder only")
    metrics = fit_text_predictor(
        inputs=args.input,
        output_dir=args.output_dir,
        text_encoder=args.text_encoder or settings.text_encoder_path,
        seed=args.seed,
        device=args.device,
        on_stage=_stage_bars(),
    )
    return {"output_dir": str(args.output_dir), **metrics}


def command_synth(args, settings) -> dict:
    from workers.synth.labelling import SynthConfig, run_synth

    config = SynthConfig(
        input_path=str(args.input),
        output_dir=str(args.output_dir),
        teacher_model=args.teacher_model or settings.judge_model_path,
        chunk_pairs=args.chunk_pairs,
        rationale_tokens=args.rationale_tokens,
        max_model_len=settings.MAX_MODEL_LEN,
        seed=args.seed,
        limit=args.limit,
    )
    bar = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress_bar(total, "labelling")
        bar(done, total)

    metrics = run_synth(config, on_progress=on_progress)
    return {"output_dir": str(args.output_dir), **metrics}


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Pairwise preference judge (A / B / tie).")
    parser.add_argument("-v", "--verbose", action="store_true", help="show engine logs")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        _add_predict,
        _add_calibrate,
        _add_evaluate,
        _add_leaderboard,
        _add_split,
        _add_setup_model,
        _add_train,
        _add_stack,
        _add_synth,
    ):
        add_command(commands)
    return parser


def _add_predict(commands) -> None:
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
    _add_judge_options(predict)
    predict.set_defaults(handler=command_predict)


def _add_calibrate(commands) -> None:
    calibrate = commands.add_parser("calibrate", help="fit a calibrator on a labelled CSV")
    calibrate.add_argument("--input", required=True, type=Path)
    calibrate.add_argument("--output", required=True, type=Path)
    calibrate.add_argument("--method", choices=("logistic", "temperature"), default="logistic")
    _add_judge_options(calibrate)
    calibrate.set_defaults(handler=command_calibrate)


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score a submission against a labelled CSV")
    evaluate.add_argument("--input", required=True, type=Path)
    evaluate.add_argument("--predictions", required=True, type=Path)
    evaluate.add_argument("--plot", type=Path, help="reliability diagram PNG (default: beside the predictions)")
    evaluate.set_defaults(handler=command_evaluate)


def _add_leaderboard(commands) -> None:
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


def _add_split(commands) -> None:
    split = commands.add_parser("split", help="train/holdout split of a labelled CSV, grouped by prompt")
    split.add_argument("--input", required=True, type=Path)
    split.add_argument("--output-dir", required=True, type=Path)
    split.add_argument("--holdout", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(handler=command_split)


def _add_setup_model(commands) -> None:
    setup_model = commands.add_parser("setup-model", help="convert the embedded SmolLM2-135M into SHARED_DIR/models")
    setup_model.add_argument("--force", action="store_true")
    setup_model.set_defaults(handler=command_setup_model)

    setup_default = commands.add_parser(
        "setup-default",
        help="fit the default predictor (a calibrated text model) on DEFAULT_TRAIN_CSV into SHARED_DIR/models/"
        "DEFAULT_PREDICTOR, unless the one there is current",
    )
    setup_default.add_argument("--input", type=Path, help="labelled CSV (default: DEFAULT_TRAIN_CSV)")
    setup_default.add_argument("--device", help="encoder device: cpu, cuda (default: CUDA when visible)")
    setup_default.add_argument("--force", action="store_true", help="refit even when the predictor is current")
    setup_default.add_argument(
        "--skip-missing", action="store_true", help="warn and exit 0 when the CSV is missing (what set-up does)"
    )
    setup_default.set_defaults(handler=command_setup_default)


def _add_train(commands) -> None:
    import dataclasses

    from workers.training.config import TrainConfig

    # The defaults are TrainConfig's, which are TrainJobRequest's (shared/schemas.py): one source for REST and CLI.
    default = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    train = commands.add_parser("train", help="train a LoRA classifier judge (A / B / tie head) on labelled CSVs")
    train.add_argument("--input", required=True, type=Path, action="append", help="labelled CSV (repeatable)")
    train.add_argument(
        "--weight", type=float, action="append", help="loss weight of the matching --input (repeatable; default 1)"
    )
    train.add_argument("--output-dir", required=True, type=Path, help="adapter folder to create (or resume)")
    train.add_argument(
        "--text-only",
        action="store_true",
        help="fit a text predictor (sentence-encoder + length/style features, LightGBM, calibrated; no LLM, minutes on"
        " a CPU) into --output-dir; `--output-dir $SHARED_DIR/models/default` replaces the default predictor",
    )
    train.add_argument("--validation", type=Path, help="labelled CSV to validate on (default: hold out prompts)")
    train.add_argument("--base-model", help="base model folder (default: MODEL_PATH or the embedded SmolLM2-135M)")
    train.add_argument("--rank", type=int, default=default["rank"])
    train.add_argument("--alpha", type=int, default=default["alpha"])
    train.add_argument("--dropout", type=float, default=default["dropout"])
    train.add_argument("--target-modules", default=",".join(default["target_modules"]), help="comma-separated")
    train.add_argument("--lora-top-layers", type=int, help="LoRA on the top N layers only (much cheaper backward)")
    train.add_argument("--epochs", type=float, default=default["epochs"])
    train.add_argument("--lr", type=float, default=default["learning_rate"], help="LoRA learning rate")
    train.add_argument(
        "--head-lr", type=float, default=default["head_learning_rate"], help="learning rate of the 3-way head"
    )
    train.add_argument("--max-length", type=int, default=default["max_length"], help="token budget of one example")
    train.add_argument("--batch-size", type=int, default=default["batch_size"])
    train.add_argument("--grad-accum", type=int, default=default["grad_accum"])
    train.add_argument("--seed", type=int, default=default["seed"])
    train.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    train.add_argument("--time-budget-min", type=float, help="stop (and finish normally) after N minutes of training")
    train.add_argument(
        "--val-fraction", type=float, default=default["val_fraction"], help="share of prompt groups held out"
    )
    train.add_argument("--max-val-rows", type=int, help="cap on validation rows (evaluation cost)")
    train.add_argument("--eval-every", type=int, help="evaluate every N steps (default: 4 times per epoch)")
    train.add_argument(
        "--checkpoint-every", type=int, default=default["checkpoint_every"], help="resumable checkpoint every N steps"
    )
    train.add_argument(
        "--patience", type=int, default=default["patience"], help="evaluations without improvement before stopping"
    )
    train.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy 2-core machine)")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when a GPU is visible)")
    train.add_argument(
        "--text-encoder", help="sentence encoder of the stacked text model (default: TEXT_ENCODER_PATH / embedded)"
    )
    train.add_argument("--no-text-model", action="store_true", help="stack the adapter with length features only")
    train.set_defaults(handler=command_train)


def _add_stack(commands) -> None:
    stack = commands.add_parser(
        "stack", help="refit a trained adapter's text model and calibrator from its stored validation logits"
    )
    stack.add_argument("--adapter", required=True, type=Path, help="adapter folder made by `arena train`")
    stack.add_argument(
        "--input", required=True, type=Path, action="append", help="the labelled CSV(s) it was trained on"
    )
    stack.add_argument("--weight", type=float, action="append", help="loss weight of the matching --input")
    stack.add_argument("--text-encoder", help="sentence encoder (default: TEXT_ENCODER_PATH / embedded)")
    stack.add_argument("--no-text-model", action="store_true", help="stack with length features only")
    stack.set_defaults(handler=command_stack)


def _add_synth(commands) -> None:
    import dataclasses

    from workers.synth.labelling import SynthConfig

    default = {field.name: field.default for field in dataclasses.fields(SynthConfig)}
    synth = commands.add_parser(
        "synth", help="label pairs with a teacher LLM: per-criterion votes, probabilities, rationales, soft labels"
    )
    synth.add_argument("--input", required=True, type=Path, help="Kaggle-format CSV of pairs (labels optional)")
    synth.add_argument("--output-dir", required=True, type=Path, help="folder to create or resume")
    synth.add_argument("--teacher-model", help="teacher model folder (default: MODEL_PATH or the embedded model)")
    synth.add_argument(
        "--chunk-pairs",
        type=int,
        default=default["chunk_pairs"],
        help="distinct pairs per chunk (the unit of resuming)",
    )
    synth.add_argument(
        "--rationale-tokens",
        type=int,
        default=default["rationale_tokens"],
        help="token budget of one rationale (0: votes only, faster)",
    )
    synth.add_argument("--limit", type=int, help="label only the first N rows")
    synth.add_argument("--seed", type=int, default=default["seed"])
    synth.set_defaults(handler=command_synth)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workers.common.hardware import prefer_passive_openmp_waits

    prefer_passive_openmp_waits()  # before any command imports torch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from shared.settings import get_settings

    try:
        settings = get_settings()
        summary = args.handler(args, settings)
    except USER_ERRORS as exc:
        print(f"arena {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
