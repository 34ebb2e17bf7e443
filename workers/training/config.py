"""What a training run is given: its sources and settings (defaults from TrainJobRequest), and what it reports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.errors import UserError
from shared.schemas import TrainJobRequest


def _request_default(name: str):
    """TrainJobRequest (shared/schemas.py) is the one source of the train defaults: REST, job, CLI and this."""
    field = TrainJobRequest.model_fields[name]
    return field.default_factory() if field.default_factory is not None else field.default


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
        quantization: "4bit" trains LoRA on an NF4-quantized base (QLoRA; CUDA with bitsandbytes); None: no
            quantization (bf16 base on a GPU, fp32 on a CPU; workers/training/precision.py).
        gradient_checkpointing: recompute activations in backward; None: on for CUDA, off for a CPU.
        text_encoder: sentence-encoder folder of the text model stacked with the adapter; None: no text model.
    """

    sources: list[TrainingSource]
    output_dir: Path
    base_model: str
    validation_path: Path | None = None
    rank: int = _request_default("lora_rank")
    alpha: int = _request_default("lora_alpha")
    dropout: float = _request_default("lora_dropout")
    target_modules: tuple[str, ...] = tuple(_request_default("target_modules"))
    lora_top_layers: int | None = _request_default("lora_top_layers")
    epochs: float = _request_default("epochs")
    learning_rate: float = _request_default("learning_rate")
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    max_length: int = _request_default("max_length")
    batch_size: int = _request_default("batch_size")
    grad_accum: int = _request_default("grad_accum")
    seed: int = _request_default("seed")
    max_steps: int | None = _request_default("max_steps")
    time_budget_s: float | None = None
    val_fraction: float = _request_default("val_fraction")
    max_val_rows: int | None = _request_default("max_val_rows")
    eval_every: int | None = None
    checkpoint_every: int = 50
    patience: int = 3
    eval_batch_size: int = 8
    threads: int | None = None
    device: str | None = None
    text_encoder: str | None = None
    quantization: str | None = _request_default("quantization")
    gradient_checkpointing: bool | None = None

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
                "gradient_checkpointing",
            )
        }
        if keep["quantization"] is None:  # the digest of a run without it stays what it was before the option
            del keep["quantization"]
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
