"""How a training run uses its device: weight dtype, autocast, gradient checkpointing, 4-bit QLoRA, batch-token cap.

Each decision is a plain function of a `DeviceCapabilities` description, so it is tested on a CPU with fake
capabilities; `probe_capabilities` is the only part that asks the real device.

On a CPU nothing changes from before: fp32 master weights under bf16 autocast where the CPU multiplies bf16 in
hardware (workers/common/hardware.py), no checkpointing, no cap of the trainer's own (the gateway's
TRAIN_MAX_BATCH_TOKENS caps a job before it is queued). On CUDA an fp32 base leaves an 8B model at roughly
60-70 GB for 4 x 512 tokens; the base in bf16 (fp16 where the card lacks bf16, e.g. a T4) with gradient
checkpointing brings that to about 16 GB of weights plus well under 1 MB of activations per token.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

from workers.training.config import TrainingError

QUANTIZATIONS = ("4bit",)
# Share of the free device memory (after the weights are loaded) that a batch's activations may plan to fill:
# the rest is the allocator's fragmentation, the optimizer state (created at the first step) and CUDA workspaces.
FREE_MEMORY_SHARE = 0.8
# The per-token estimate below counts the tensors a decoder layer saves for backward; the backward pass of one
# layer holds about as much again in gradients and temporaries while it runs.
BACKWARD_OVERHEAD = 1.5


@dataclass(frozen=True)
class DeviceCapabilities:
    """What the training device offers, as far as the plan is concerned.

    Attributes:
        kind: "cpu" or "cuda".
        bf16: CUDA only: the card computes in bf16 natively (Ampere and later; not a T4 or V100).
        bitsandbytes: the bitsandbytes package is importable (4-bit QLoRA).
        name: the device's name, for the metrics.
    """

    kind: str
    bf16: bool = False
    bitsandbytes: bool = False
    name: str = "cpu"


@dataclass(frozen=True)
class TrainingPlan:
    """The decisions of one run, written to metrics.json.

    Attributes:
        weights_dtype: dtype the frozen base is loaded in (the LoRA matrices and the head always train in fp32).
        autocast_dtype: CUDA autocast dtype; None on a CPU, where `autocast_context` decides as before.
        gradient_checkpointing: recompute each decoder layer in backward instead of keeping its activations.
        quantization: "4bit" (QLoRA: NF4 base, bitsandbytes) or None.
        loss_scaling: fp16 compute needs a gradient scaler (its range underflows small gradients); bf16 does not.
    """

    weights_dtype: str
    autocast_dtype: str | None
    gradient_checkpointing: bool
    quantization: str | None
    loss_scaling: bool

    def describe(self) -> dict:
        return asdict(self)


def plan_training(
    capabilities: DeviceCapabilities, *, quantization: str | None = None, gradient_checkpointing: bool | None = None
) -> TrainingPlan:
    """The plan for a device: CPU as before; CUDA in bf16 (fp16 without it), checkpointed, optionally 4-bit.

    Args:
        capabilities: the device (see `probe_capabilities`).
        quantization: None, or "4bit" for QLoRA (CUDA with bitsandbytes only).
        gradient_checkpointing: None: on for CUDA, off for a CPU (where it costs time and memory is not short).

    Raises:
        TrainingError: 4-bit asked for on a CPU, without bitsandbytes, or an unknown quantization.
    """
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise TrainingError(f"quantization {quantization!r} is not offered; use one of {QUANTIZATIONS} or none")
    on_cuda = capabilities.kind == "cuda"
    if quantization is not None and not on_cuda:
        raise TrainingError("4-bit QLoRA needs a CUDA GPU (bitsandbytes); train without quantization on a CPU")
    if quantization is not None and not capabilities.bitsandbytes:
        raise TrainingError(
            "4-bit QLoRA needs the bitsandbytes package on the worker: `pip install bitsandbytes` in the worker"
            " environment (GPU images), or train without quantization"
        )
    checkpointing = on_cuda if gradient_checkpointing is None else gradient_checkpointing
    if not on_cuda:
        return TrainingPlan("float32", None, checkpointing, None, loss_scaling=False)
    compute = "bfloat16" if capabilities.bf16 else "float16"
    return TrainingPlan(compute, compute, checkpointing, quantization, loss_scaling=compute == "float16")


def probe_capabilities(device: str) -> DeviceCapabilities:
    """The real device's capabilities (CUDA is initialised only when `device` is a CUDA device)."""
    bitsandbytes = importlib.util.find_spec("bitsandbytes") is not None
    if not device.startswith("cuda"):
        return DeviceCapabilities("cpu", bitsandbytes=bitsandbytes)
    import torch

    # Without including_emulation, a T4 reports bf16 as supported (emulated, slow) in recent torch releases.
    try:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        bf16 = torch.cuda.is_bf16_supported()
    return DeviceCapabilities("cuda", bf16=bf16, bitsandbytes=bitsandbytes, name=torch.cuda.get_device_name(device))


def activation_bytes_per_token(
    *, hidden_size: int, intermediate_size: int, num_layers: int, dtype_bytes: int, gradient_checkpointing: bool
) -> int:
    """Bytes of activations one token of a training batch holds at the peak of backward (an estimate).

    A Llama-style decoder layer saves about 10 hidden-size vectors (norms, q/k/v and attention inputs and outputs,
    residuals; attention through SDPA keeps no seq x seq matrix) and 4 intermediate-size ones (gate, up, the
    activation, its product) per token. Checkpointing keeps only each layer's input and recomputes one layer at a
    time in backward.
    """
    per_layer = (10 * hidden_size + 4 * intermediate_size) * dtype_bytes
    if gradient_checkpointing:
        saved = num_layers * hidden_size * dtype_bytes + per_layer
    else:
        saved = num_layers * per_layer
    return int(saved * BACKWARD_OVERHEAD)


def batch_token_cap(*, free_bytes: int, bytes_per_token: int) -> int:
    """Most tokens one forward pass (batch_size x max_length) may hold in `free_bytes` of device memory."""
    return max(0, int(free_bytes * FREE_MEMORY_SHARE) // max(1, bytes_per_token))


def model_batch_token_cap(model_config, *, plan: TrainingPlan, free_bytes: int) -> int:
    """`batch_token_cap` for a transformers model config (Llama-style names) under this plan."""
    per_token = activation_bytes_per_token(
        hidden_size=model_config.hidden_size,
        intermediate_size=getattr(model_config, "intermediate_size", None) or 4 * model_config.hidden_size,
        num_layers=model_config.num_hidden_layers,
        dtype_bytes=2,  # bf16 or fp16 activations: the plan on CUDA, the only device this cap applies to
        gradient_checkpointing=plan.gradient_checkpointing,
    )
    return batch_token_cap(free_bytes=free_bytes, bytes_per_token=per_token)


def check_batch_tokens(*, batch_tokens: int, cap: int, free_bytes: int, plan: TrainingPlan) -> None:
    """Refuse a batch that would not fit, before the first step runs out of memory part way through a job.

    Raises:
        TrainingError: naming the cap, the free memory and the ways to fit (grad_accum keeps the effective batch).
    """
    if batch_tokens <= cap:
        return
    hints = ["lower --batch-size and raise --grad-accum (the same effective batch)", "or lower --max-length"]
    if not plan.gradient_checkpointing:
        hints.append("or turn gradient checkpointing on")
    if plan.quantization is None:
        hints.append("or train the base in 4 bits (--quantization 4bit, with bitsandbytes)")
    raise TrainingError(
        f"batch_size x max_length = {batch_tokens} tokens per forward pass will not fit this GPU: with"
        f" {free_bytes / 2**30:.1f} GiB free after loading the model, about {cap} tokens fit; " + ", ".join(hints)
    )
