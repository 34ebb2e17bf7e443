"""Benchmark: LoRA-train a 3-way classifier head on a causal LM, then predict both orders; print speed and memory.

The path `arena train --device cuda` takes, through the trainer's own code (workers/training): the device plan
(bf16 base on a GPU, fp16 where bf16 is missing, fp32 on a CPU; gradient checkpointing on CUDA; optional 4-bit),
the base loaded by `load_base` or random-initialised in the plan's dtype, LoRA on q/k/v/o plus the head by
`prepare_lora_model`, the trainer's optimizer and schedule, `optimizer_step` (soft-label loss, clipping, the
plan's autocast), then the evaluation's `sequence_logits` over the pairs in both orders. Prints one JSON object:
steps/s, training and inference tokens/s, peak memory (CUDA allocator peak on a GPU, process RSS on a CPU),
free device memory before and after releasing the model, the trainer's batch-token cap for this device, and
whether the LoRA weights changed while the base weights did not. The weight snapshots behind that check are
kept on the CPU and taken before the peak is reset, so they do not count in it.

    # the embedded SmolLM2-135M on real pairs (train/predict the first rows of a labelled CSV)
    python scripts/bench/bench_gpu_lora.py --device cuda --model var/shared/models/SmolLM2-135M-Instruct \\
        --data ../shared/data/preference_pairs.csv --steps 40
    # memory and throughput of an 8B base: random weights in the shape of Llama-3.1-8B (no download)
    python scripts/bench/bench_gpu_lora.py --device cuda --random-shape llama-8b --steps 3
    # a seconds-long CPU smoke run of the same code (the tests run this)
    python scripts/bench/bench_gpu_lora.py --device cpu --random-shape tiny --steps 2 --max-length 64

Needs torch, transformers and peft only (no vLLM): it runs on the lent GPU machine as it is.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from workers.common.hardware import prepare_process_environment  # noqa: E402  (the path above first)

prepare_process_environment()  # before torch loads, as the worker and the CLI do

# Shapes of public model configs (no weights are read: random initialisation, throughput and memory only).
RANDOM_SHAPES = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
    ),
}
NUM_LABELS = 3
SWAPPED_LABEL = {0: 1, 1: 0, 2: 2}
PAD_TOKEN_ID = 0
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def train_config(args):
    """The trainer's configuration for these options (sources and output are unused: the benchmark feeds batches)."""
    from workers.training.config import TrainConfig

    return TrainConfig(
        sources=[],
        output_dir=Path(os.devnull),
        base_model=str(args.model or f"random {args.random_shape}"),
        rank=args.lora_rank,
        alpha=2 * args.lora_rank,
        dropout=0.0,
        target_modules=TARGET_MODULES,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        quantization=args.quantization,
        gradient_checkpointing=args.gradient_checkpointing,
    )


def build_classifier(args, config, plan, torch):
    """The base as a 3-way classifier with LoRA, as the trainer builds it; (model, tokenizer or None)."""
    from workers.training.model import load_base, prepare_lora_model

    torch.manual_seed(args.seed)
    if args.random_shape:
        from transformers import LlamaConfig, LlamaForSequenceClassification

        if plan.quantization is not None:
            raise SystemExit("bench_gpu_lora: --quantization needs --model (a random base has no weights to quantize)")
        shape = {"vocab_size": 32000, **RANDOM_SHAPES[args.random_shape]}
        llama = LlamaConfig(**shape, num_labels=NUM_LABELS, pad_token_id=PAD_TOKEN_ID, max_position_embeddings=8192)
        with torch.device(args.device):
            base = LlamaForSequenceClassification._from_config(llama, dtype=getattr(torch, plan.weights_dtype))
        return prepare_lora_model(base, config, plan), None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from workers.judge.classifier import padding_token_id
    from workers.judge.engines import load_tokenizer

    tokenizer = load_tokenizer(str(args.model))
    base = load_base(config, plan, pad_token_id=padding_token_id(tokenizer), device=args.device)
    return prepare_lora_model(base, config, plan), tokenizer


def pair_sequences(args, tokenizer, vocab_size: int, rng) -> list[tuple[list[int], list[int], int]]:
    """(tokens A first, tokens B first, label) per pair: real rows when a tokenizer and --data are given."""
    if tokenizer is None or args.data is None:
        pairs = []
        for _ in range(args.pairs):
            half = int(rng.integers(args.max_length // 4, args.max_length // 2))
            prompt, first, second = (rng.integers(1, vocab_size, size=half // 2).tolist() for _ in range(3))
            pairs.append((prompt + first + second, prompt + second + first, int(rng.integers(0, NUM_LABELS))))
        return pairs
    import pandas as pd

    frame = pd.read_csv(args.data, dtype=str, keep_default_na=False).head(args.pairs)
    labels = frame[["winner_model_a", "winner_model_b", "winner_tie"]].astype(int).to_numpy().argmax(axis=1)
    pairs = []
    for row, label in zip(frame.itertuples(), labels, strict=True):
        texts = {
            "a": f"Prompt: {row.prompt}\nResponse A: {row.response_a}\nResponse B: {row.response_b}\nWhich is better?",
            "b": f"Prompt: {row.prompt}\nResponse A: {row.response_b}\nResponse B: {row.response_a}\nWhich is better?",
        }
        ids = {
            key: tokenizer(text, truncation=True, max_length=args.max_length)["input_ids"]
            for key, text in texts.items()
        }
        pairs.append((ids["a"], ids["b"], int(label)))
    return pairs


def peak_memory_mib(torch, device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_memory_mib(torch, device: str) -> float | None:
    return torch.cuda.mem_get_info(device)[0] / 2**20 if device.startswith("cuda") else None


def snapshot(named_parameters) -> dict:
    """Copies on the CPU: a copy on the device would count in the peak it is meant to measure."""
    return {name: parameter.detach().to("cpu", copy=True) for name, parameter in named_parameters}


def device_batch_token_cap(torch, model, plan, device: str) -> int | None:
    """The trainer's cap for this device (it refuses a larger batch; reported here, not enforced)."""
    if not device.startswith("cuda"):
        return None
    from workers.training.precision import model_batch_token_cap

    return model_batch_token_cap(model.config, plan=plan, free_bytes=torch.cuda.mem_get_info(device)[0])


def synchronize(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def run(args) -> dict:
    import numpy as np
    import torch

    from workers.judge.classifier import sequence_logits
    from workers.training.model import build_optimizer, make_grad_scaler, optimizer_step
    from workers.training.precision import plan_training, probe_capabilities

    on_cuda = args.device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise SystemExit("bench_gpu_lora: --device cuda but torch sees no GPU; use --device cpu for a smoke run")
    rng = np.random.default_rng(args.seed)
    config = train_config(args)
    capabilities = probe_capabilities(args.device)
    plan = plan_training(
        capabilities, quantization=args.quantization, gradient_checkpointing=args.gradient_checkpointing
    )
    free_at_start = free_memory_mib(torch, args.device)
    started = time.perf_counter()
    model, tokenizer = build_classifier(args, config, plan, torch)
    synchronize(torch, args.device)
    load_seconds = time.perf_counter() - started
    pad_token_id = model.config.pad_token_id
    pairs = pair_sequences(args, tokenizer, model.config.vocab_size, rng)
    # Both orders of every pair, the label swapped with the responses (tie stays tie); one-hot soft labels.
    examples = [(a_first, label) for a_first, _, label in pairs] + [
        (b_first, SWAPPED_LABEL[label]) for _, b_first, label in pairs
    ]
    trainable_before = snapshot((n, p) for n, p in model.named_parameters() if p.requires_grad)
    # A few frozen matrices LoRA wraps, not the embeddings (a copy of 128k x 4096 would be 1 GB for nothing).
    frozen_names = [name for name, p in model.named_parameters() if not p.requires_grad and "base_layer" in name][:4]
    frozen_before = snapshot((n, p) for n, p in model.named_parameters() if n in frozen_names)
    optimizer, scheduler = build_optimizer(model, config, total_steps=max(1, args.steps))
    scaler = make_grad_scaler(plan)
    cap = device_batch_token_cap(torch, model, plan, args.device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(args.device)
    model.train()
    identity = np.eye(NUM_LABELS)
    step_seconds, step_tokens, losses = [], [], []
    for step in range(args.steps):
        batch = [examples[int(index)] for index in rng.integers(0, len(examples), size=args.batch_size)]
        sequences = [ids for ids, _ in batch]
        targets = identity[[label for _, label in batch]]
        synchronize(torch, args.device)
        tick = time.perf_counter()
        loss = optimizer_step(
            model,
            optimizer,
            scheduler,
            [(sequences, targets, np.ones(len(batch)))],
            pad_token_id=pad_token_id,
            device=args.device,
            autocast_dtype=plan.autocast_dtype,
            scaler=scaler,
        )
        synchronize(torch, args.device)
        if step >= args.warmup_steps or args.steps <= args.warmup_steps:
            step_seconds.append(time.perf_counter() - tick)
            step_tokens.append(sum(len(ids) for ids in sequences))
        losses.append(loss)
    train_peak = peak_memory_mib(torch, args.device)

    model.eval()
    tick = time.perf_counter()
    both_orders = [a_first for a_first, _, _ in pairs] + [b_first for _, b_first, _ in pairs]
    logits = sequence_logits(
        model, both_orders, pad_token_id=pad_token_id, device=args.device, batch_size=args.batch_size
    )
    synchronize(torch, args.device)
    predict_seconds = time.perf_counter() - tick
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    probabilities = (scores[: len(pairs)] + scores[len(pairs) :][:, [1, 0, 2]]) / 2
    trainable_after = dict(model.named_parameters())
    lora_changed = any(
        not torch.equal(value, trainable_after[name].detach().cpu()) for name, value in trainable_before.items()
    )
    base_unchanged = all(
        torch.equal(value, trainable_after[name].detach().cpu()) for name, value in frozen_before.items()
    )
    figures = {
        "device": torch.cuda.get_device_name(args.device) if on_cuda else "cpu",
        "model": f"random {args.random_shape}" if args.random_shape else str(args.model),
        "plan": plan.describe(),
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "trainable_parameters_millions": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3),
        "gradient_checkpointing": plan.gradient_checkpointing,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "batch_token_cap": cap,
        "load_seconds": round(load_seconds, 1),
        "timed_steps": len(step_seconds),
        "steps_per_second": round(len(step_seconds) / sum(step_seconds), 3),
        "train_tokens_per_second": round(sum(step_tokens) / sum(step_seconds), 1),
        "train_peak_memory_mib": round(train_peak, 1),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "predict_pairs": len(pairs),
        "predict_pairs_per_second": round(len(pairs) / predict_seconds, 2),
        "predict_tokens_per_second": round(sum(len(ids) for ids in both_orders) / predict_seconds, 1),
        "peak_memory_mib": round(peak_memory_mib(torch, args.device), 1),
        "probabilities_sum_to_one": bool(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)),
        "lora_weights_changed": lora_changed,
        "base_weights_unchanged": base_unchanged,
    }
    del model, optimizer, scheduler, scaler, trainable_after
    if on_cuda:
        figures["free_memory_mib"] = {
            "at_start": round(free_at_start, 1),
            "before_release": round(free_memory_mib(torch, args.device), 1),
        }
        gc.collect()
        torch.cuda.empty_cache()
        figures["free_memory_mib"]["after_release"] = round(free_memory_mib(torch, args.device), 1)
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a local causal-LM folder (HF layout)")
    source.add_argument("--random-shape", choices=sorted(RANDOM_SHAPES), help="random weights of this shape")
    parser.add_argument("--data", type=Path, help="labelled arena CSV to train/predict on (with --model)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=64, help="pairs to predict (both orders) after training")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute activations in backward (default: the trainer's: on with CUDA, off on a CPU)",
    )
    parser.add_argument("--quantization", choices=("4bit",), help="4-bit QLoRA base (CUDA, bitsandbytes, --model)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run(parse_args()), indent=1))
    sys.exit(0)
