"""`arena split`, `train`, `stack` and `synth`: fitting judges and text predictors, labelling with a teacher."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workers.cli.progress import progress_bar, stage_bars


def command_split(args, settings) -> dict:
    from workers.training.splits import split_file

    return split_file(args.input, args.output_dir, holdout_fraction=args.holdout, seed=args.seed)


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
        quantization=args.quantization,
        gradient_checkpointing=args.gradient_checkpointing,
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
        on_stage=stage_bars(),
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
            bar = progress_bar(total, "labelling")
        bar(done, total)

    metrics = run_synth(config, on_progress=on_progress)
    return {"output_dir": str(args.output_dir), **metrics}


def add_split(commands) -> None:
    split = commands.add_parser("split", help="train/holdout split of a labelled CSV, grouped by prompt")
    split.add_argument("--input", required=True, type=Path)
    split.add_argument("--output-dir", required=True, type=Path)
    split.add_argument("--holdout", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(handler=command_split)


def add_train(commands) -> None:
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
        "--quantization",
        choices=("4bit",),
        help="4bit: QLoRA on an NF4-quantized base (CUDA with bitsandbytes); default: bf16 base on a GPU, fp32 on CPU",
    )
    train.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute activations in backward (default: on with CUDA, off on a CPU)",
    )
    train.add_argument(
        "--text-encoder", help="sentence encoder of the stacked text model (default: TEXT_ENCODER_PATH / embedded)"
    )
    train.add_argument("--no-text-model", action="store_true", help="stack the adapter with length features only")
    train.set_defaults(handler=command_train)


def add_stack(commands) -> None:
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


def add_synth(commands) -> None:
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
