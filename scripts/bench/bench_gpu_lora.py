"""Benchmark: LoRA-train a 3-way classifier head on a causal LM, then predict both orders; print speed and memory.

The path `arena train --device cuda` takes, measured on its own: the base model as a sequence classifier
(3 labels), LoRA on q/k/v/o plus the head (PEFT SEQ_CLS), bf16, optional gradient checkpointing, AdamW, then
inference over the pairs in both response orders. Prints one JSON object: steps/s, training and inference
tokens/s, peak memory (CUDA allocator peak on a GPU, process RSS on a CPU), and whether the LoRA weights
changed while the base weights did not.

    # the embedded SmolLM2-135M on real pairs (train/predict the first rows of a labelled CSV)
    python scripts/bench/bench_gpu_lora.py --device cuda --model var/shared/models/SmolLM2-135M-Instruct \\
        --data ../shared/data/preference_pairs.csv --steps 40
    # throughput only: random weights in the shape of Llama-3.1-8B (no download: built from a config)
    python scripts/bench/bench_gpu_lora.py --device cuda --random-shape llama-8b --steps 10 --gradient-checkpointing
    # a seconds-long CPU smoke run of the same code (the tests run this)
    python scripts/bench/bench_gpu_lora.py --device cpu --random-shape tiny --steps 2 --max-length 64

Needs torch, transformers and peft only (no vLLM): it runs on the lent GPU machine as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

# Shapes of public model configs (no weights are read: random initialisation, throughput only).
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


def build_classifier(args, torch):
    """The base model as a 3-way sequence classifier, in bf16 on a GPU (fp32 weights + bf16 autocast on a CPU)."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    if args.random_shape:
        shape = {"vocab_size": 32000, **RANDOM_SHAPES[args.random_shape]}
        config = LlamaConfig(**shape, num_labels=NUM_LABELS, pad_token_id=PAD_TOKEN_ID, max_position_embeddings=8192)
        torch.manual_seed(args.seed)
        with torch.device(args.device):
            model = LlamaForSequenceClassification(config).to(dtype)
        return model, None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=NUM_LABELS, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else PAD_TOKEN_ID
    return model.to(args.device), tokenizer


def with_lora(model, args):
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        modules_to_save=["score"],
    )
    model = get_peft_model(model, config)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


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


def padded(torch, sequences: list[list[int]], device: str):
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), PAD_TOKEN_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def peak_memory_mib(torch, device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def snapshot(model, *, trainable: bool) -> dict:
    return {
        name: parameter.detach().float().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad == trainable and ("lora_" in name or "score" in name or not trainable)
    }


def run(args) -> dict:
    import numpy as np
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu_lora: --device cuda but torch sees no GPU; use --device cpu for a smoke run")
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    base, tokenizer = build_classifier(args, torch)
    model = with_lora(base, args).to(args.device)
    load_seconds = time.perf_counter() - started
    pairs = pair_sequences(args, tokenizer, model.config.vocab_size, rng)
    # Both orders of every pair, the label swapped with the responses (tie stays tie).
    examples = [(a_first, label) for a_first, _, label in pairs] + [
        (b_first, SWAPPED_LABEL[label]) for _, b_first, label in pairs
    ]
    trainable_before = snapshot(model, trainable=True)
    frozen_sample = dict(list(snapshot(model, trainable=False).items())[:4])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    autocast = torch.autocast(device_type="cuda" if args.device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.train()
    step_seconds, step_tokens, losses = [], [], []
    for step in range(args.steps):
        batch = [examples[int(index)] for index in rng.integers(0, len(examples), size=args.batch_size)]
        input_ids, attention_mask = padded(torch, [ids for ids, _ in batch], args.device)
        labels = torch.tensor([label for _, label in batch], device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        tick = time.perf_counter()
        with autocast:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= args.warmup_steps or args.steps <= args.warmup_steps:
            step_seconds.append(time.perf_counter() - tick)
            step_tokens.append(int(attention_mask.sum()))
        losses.append(float(loss.detach()))
    train_peak = peak_memory_mib(torch, args.device)

    model.eval()
    tick = time.perf_counter()
    predicted_tokens = 0
    probabilities = []
    with torch.inference_mode(), autocast:
        for start in range(0, len(pairs), args.batch_size):
            chunk = pairs[start : start + args.batch_size]
            both = [a_first for a_first, _, _ in chunk] + [b_first for _, b_first, _ in chunk]
            input_ids, attention_mask = padded(torch, both, args.device)
            scores = torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)
            direct, mirrored = scores[: len(chunk)], scores[len(chunk) :][:, [1, 0, 2]]
            probabilities.append(((direct + mirrored) / 2).cpu().numpy())
            predicted_tokens += int(attention_mask.sum())
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    predict_seconds = time.perf_counter() - tick
    trainable_after = snapshot(model, trainable=True)
    frozen_after = snapshot(model, trainable=False)
    return {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "model": f"random {args.random_shape}" if args.random_shape else str(args.model),
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "trainable_parameters_millions": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3),
        "gradient_checkpointing": args.gradient_checkpointing,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "load_seconds": round(load_seconds, 1),
        "timed_steps": len(step_seconds),
        "steps_per_second": round(len(step_seconds) / sum(step_seconds), 3),
        "train_tokens_per_second": round(sum(step_tokens) / sum(step_seconds), 1),
        "train_peak_memory_mib": round(train_peak, 1),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "predict_pairs": len(pairs),
        "predict_pairs_per_second": round(len(pairs) / predict_seconds, 2),
        "predict_tokens_per_second": round(predicted_tokens / predict_seconds, 1),
        "peak_memory_mib": round(peak_memory_mib(torch, args.device), 1),
        "probabilities_sum_to_one": bool(np.allclose(np.vstack(probabilities).sum(axis=1), 1.0, atol=1e-4)),
        "lora_weights_changed": any(
            not torch.equal(trainable_before[name], trainable_after[name]) for name in trainable_before
        ),
        "base_weights_unchanged": all(torch.equal(value, frozen_after[name]) for name, value in frozen_sample.items()),
    }


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
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run(parse_args()), indent=1))
    sys.exit(0)
