"""Make the carried folder of the GPU smoke run (scripts/gpu_smoke.sh): a stand-in model, a few pairs, wheels.

    .venv-worker/bin/python scripts/make_standin_model.py var/gpu-smoke [--wheels]

The lent GPU machine has no network and takes at most 64 MiB of carried files, so the smoke run cannot use the
517 MB SmolLM2-135M. The stand-in is tokenizer-true: SmolLM2-135M-Instruct's own tokenizer and chat template (the
judge's prompts, answer tokens and padding behave as with the real model) on a random-initialised LlamaForCausalLM
of the same vocabulary, 2 layers and hidden size 128 (about 26 MB of fp32 safetensors). It learns nothing useful:
the run proves the CUDA code path, not quality.

Writes FOLDER/model/ (the stand-in), FOLDER/pairs.csv (ROWS labelled rows sampled from the shipped data,
DEFAULT_TRAIN_CSV) and, with --wheels, FOLDER/wheels/: the pure-Python packages the CLI needs that the GPU image
lacks (pydantic, pydantic-settings and theirs; pip download for CPython 3.12, manylinux x86-64), at the versions of
this worker environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# Head size 64: vLLM's attention kernels take no smaller head (the CPU backend refused 16).
STANDIN_SHAPE = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
)
# The CLI's needs that the GPU image ('cuda', docs of the device tool) does not hold; each is checked at run time.
WHEELS = ("pydantic", "pydantic-core", "pydantic-settings", "annotated-types", "typing-inspection", "python-dotenv")
CARRY_LIMIT_BYTES = 64 * 2**20


def make_model(tokenizer_dir: Path, folder: Path, *, seed: int) -> dict:
    """The tokenizer of `tokenizer_dir` on a tiny random Llama of the same vocabulary and special tokens."""
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    source = AutoConfig.from_pretrained(tokenizer_dir)
    head_dim = STANDIN_SHAPE["hidden_size"] // STANDIN_SHAPE["num_attention_heads"]
    config = LlamaConfig(
        vocab_size=source.vocab_size,
        bos_token_id=source.bos_token_id,
        eos_token_id=source.eos_token_id,
        pad_token_id=getattr(source, "pad_token_id", None),
        max_position_embeddings=source.max_position_embeddings,
        rope_theta=getattr(source, "rope_theta", 10000.0),
        tie_word_embeddings=True,
        head_dim=head_dim,
        **STANDIN_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, folder / name)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": config.vocab_size}


def sample_pairs(data_csv: Path, path: Path, *, rows: int, seed: int) -> int:
    """`rows` labelled rows of the shipped data, sampled across its sources, cells as they are."""
    import pandas as pd

    frame = pd.read_csv(data_csv, dtype=str, keep_default_na=False)
    frame.sample(n=min(rows, len(frame)), random_state=seed).to_csv(path, index=False)
    return min(rows, len(frame))


def download_wheels(folder: Path) -> list[str]:
    """This environment's versions of WHEELS, as CPython 3.12 manylinux x86-64 wheels (the GPU image's Python)."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    platforms = [
        arg
        for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
        for arg in ("--platform", tag)
    ]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *pins],
        check=True,
    )
    return sorted(path.name for path in folder.glob("*.whl"))


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> dict:
    from shared.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder to carry (e.g. var/gpu-smoke, which git ignores)")
    parser.add_argument(
        "--tokenizer-from",
        type=Path,
        default=Path(settings.judge_model_path),
        help="model folder whose tokenizer the stand-in takes (default: the embedded SmolLM2-135M, made by setup)",
    )
    parser.add_argument("--data", type=Path, default=settings.DEFAULT_TRAIN_CSV, help="labelled CSV to sample")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wheels", action="store_true", help="also download the wheels the GPU image lacks (PyPI)")
    args = parser.parse_args(argv)

    if not (args.tokenizer_from / "tokenizer.json").is_file():
        raise SystemExit(f"make_standin_model: no tokenizer in {args.tokenizer_from}; run `make setup` first")
    if not args.data.is_file():
        raise SystemExit(f"make_standin_model: {args.data} is missing; pass --data a labelled arena CSV")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.folder.mkdir(parents=True, exist_ok=True)
    summary = {"model": make_model(args.tokenizer_from, args.folder / "model", seed=args.seed)}
    summary["pairs"] = sample_pairs(args.data, args.folder / "pairs.csv", rows=args.rows, seed=args.seed)
    if args.wheels:
        summary["wheels"] = download_wheels(args.folder / "wheels")
    summary["bytes"] = folder_bytes(args.folder)
    if summary["bytes"] > CARRY_LIMIT_BYTES:
        raise SystemExit(f"make_standin_model: {args.folder} holds {summary['bytes']} bytes, over the 64 MiB carried")
    (args.folder / "standin.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
