"""The model being trained: base LM + LoRA + a 3-way head, its optimizer, loss, device and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.common.groups import factorize
from workers.common.soft_labels import multiclass_log_loss, row_log_losses
from workers.judge.classifier import load_sequence_classifier, sequence_logits
from workers.judge.outcomes import CLASS_LABELS, softmax, unswap_classes
from workers.training.config import TrainConfig, TrainingError
from workers.training.data import Rows
from workers.training.precision import DeviceCapabilities, TrainingPlan, plan_training


def _lora_config(config: TrainConfig, n_layers: int, module_names: Sequence[str] = ()):
    from peft import LoraConfig, TaskType

    from shared.model_folder import fused_target_modules

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
        target_modules=fused_target_modules(config.target_modules, module_names),
        layers_to_transform=layers,
        modules_to_save=["score"],
    )


def build_model(config: TrainConfig, *, pad_token_id: int, device: str = "cpu", plan: TrainingPlan | None = None):
    """The base model on `device` with a near-zero 3-way head and fresh LoRA matrices (only those two train).

    Args:
        config: the run's LoRA settings and seed.
        pad_token_id: the tokenizer's padding id (the head pools the last non-pad token).
        device: where the model lives.
        plan: dtype, checkpointing and quantization (workers/training/precision.py); None: the CPU plan.
    """
    import torch

    plan = plan or plan_training(DeviceCapabilities("cpu"))
    torch.manual_seed(config.seed)
    base = load_base(config, plan, pad_token_id=pad_token_id, device=device)
    return prepare_lora_model(base, config, plan)


def load_base(config: TrainConfig, plan: TrainingPlan, *, pad_token_id: int, device: str):
    """The frozen base as a 3-way classifier on `device`, in the plan's dtype (4-bit: NF4 through bitsandbytes)."""
    import torch

    if plan.quantization != "4bit":
        base = load_sequence_classifier(
            config.base_model, pad_token_id=pad_token_id, num_labels=len(CLASS_LABELS), dtype=plan.weights_dtype
        )
        return base.to(device)
    from transformers import BitsAndBytesConfig

    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, plan.autocast_dtype or "bfloat16"),
        llm_int8_skip_modules=["score"],  # the head trains; it stays in full precision
    )
    index = torch.device(device).index
    # A quantized model cannot be moved after loading: it is placed on the device as it loads.
    return load_sequence_classifier(
        config.base_model,
        pad_token_id=pad_token_id,
        num_labels=len(CLASS_LABELS),
        dtype=plan.weights_dtype,
        quantization_config=quantization_config,
        device_map={"": torch.cuda.current_device() if index is None else index},
    )


def prepare_lora_model(base, config: TrainConfig, plan: TrainingPlan):
    """LoRA on `base` (loaded or random-initialised) as the plan says: checkpointing, and fp32 trainable weights.

    The same code prepares the trainer's model and the GPU benchmark's (scripts/bench/bench_gpu_lora.py).
    """
    import torch
    from peft import get_peft_model

    with torch.no_grad():
        # Start near the uniform prediction (log loss ln 3) rather than from random logits of several nats. Not
        # exactly zero: LoRA B starts at zero too, and a zero head would pass it no gradient in the first step.
        base.score.weight.normal_(mean=0.0, std=1e-3)
    # use_reentrant=False: the reentrant variant passes no gradient through a checkpointed block whose inputs
    # need none (a frozen base), which would leave the LoRA matrices untrained; enable_input_require_grads covers
    # any caller that still ends up on the reentrant path.
    checkpoint_options = {"use_reentrant": False}
    if plan.quantization is not None:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(
            base,
            use_gradient_checkpointing=plan.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpoint_options,
        )
    elif plan.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_options)
        base.enable_input_require_grads()
    try:
        module_names = [name for name, _ in base.named_modules()]
        model = get_peft_model(base, _lora_config(config, base.config.num_hidden_layers, module_names))
    except ValueError as exc:
        raise TrainingError(f"LoRA settings do not fit this model ({exc}); check --target-modules") from None
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            # The head copies the base's dtype; updates of 1e-4 relative size vanish in bf16's 8-bit mantissa.
            parameter.data = parameter.data.float()
    return model


def build_optimizer(model, config: TrainConfig, total_steps: int):
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


def training_autocast(device: str, autocast_dtype: str | None = None):
    """The plan's autocast on CUDA; on a CPU, bf16 autocast where the CPU has bf16 hardware (as before)."""
    import torch

    from workers.common.hardware import autocast_context

    if autocast_dtype is not None and device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=getattr(torch, autocast_dtype))
    return autocast_context(device, True)


def batch_loss(
    model, sequences, targets, weights, *, pad_token_id: int, device: str, autocast_dtype: str | None = None
):
    """Soft-label cross-entropy, weighted per example (source weight)."""
    import torch

    from workers.judge.classifier import pad_batch

    input_ids, attention_mask = pad_batch(sequences, pad_token_id=pad_token_id, device=device)
    with training_autocast(device, autocast_dtype):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    log_probabilities = torch.log_softmax(logits.float(), dim=-1)
    per_example = -(torch.tensor(targets, dtype=torch.float32, device=device) * log_probabilities).sum(dim=-1)
    weight = torch.tensor(weights, dtype=torch.float32, device=device)
    return (per_example * weight).sum() / weight.sum()


def make_grad_scaler(plan: TrainingPlan):
    """A gradient scaler where the plan computes in fp16; None otherwise (bf16 and fp32 need none)."""
    if not plan.loss_scaling:
        return None
    import torch

    return torch.amp.GradScaler("cuda")


def optimizer_step(
    model,
    optimizer,
    scheduler,
    batches: Sequence[tuple[Sequence[list[int]], np.ndarray, np.ndarray]],
    *,
    pad_token_id: int,
    device: str,
    autocast_dtype: str | None = None,
    scaler=None,
) -> float:
    """One optimizer step over (sequences, targets, weights) batches (gradient accumulation); their mean loss.

    The trainer's step, and the GPU benchmark's: what the benchmark times is what a train job runs.
    """
    import torch

    group_loss = 0.0
    for sequences, targets, weights in batches:
        loss = batch_loss(
            model, sequences, targets, weights, pad_token_id=pad_token_id, device=device, autocast_dtype=autocast_dtype
        )
        share = loss / len(batches)
        (share if scaler is None else scaler.scale(share)).backward()
        group_loss += float(loss.detach()) / len(batches)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skips the step when the scaled gradients overflowed
        scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return group_loss


def resolve_device(requested: str | None) -> str:
    """The torch device to train on: the one asked for, else CUDA when a GPU is visible, else the CPU."""
    from workers.common.hardware import cuda_available

    if requested in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if requested.startswith("cuda") and not cuda_available():
        raise TrainingError(f"--device {requested}: no CUDA GPU is visible here; use --device cpu or leave it unset")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise TrainingError(f"--device {requested!r} is not a device; use cpu, cuda or cuda:N")
    return requested


def evaluate_rows(
    model, rows: Rows, *, pad_token_id: int, batch_size: int, device: str = "cpu"
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
    # Codes, not a mask per source: O(rows) however many sources; sorted by name as before.
    codes, names = factorize(sources, sort=True)
    counts = np.bincount(codes, minlength=len(names))
    losses = np.bincount(codes, weights=row_log_losses(labels, probabilities), minlength=len(names))
    return {
        "log_loss": multiclass_log_loss(labels, probabilities),
        "accuracy": float((probabilities.argmax(axis=1) == labels.argmax(axis=1)).mean()),
        "loss_per_order": float(np.mean(per_order)),
        "per_source_log_loss": {
            name: float(loss / count) for name, loss, count in zip(names, losses, counts, strict=True)
        },
    }
