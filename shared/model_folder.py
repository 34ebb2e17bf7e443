"""A base model folder as a train or synth job uses it, read without torch: config.json and the safetensors headers.

The gateway checks a job's model and LoRA options here before it answers 202, by the rules the worker applies
when it loads the model (transformers) and puts LoRA on it (PEFT, workers/training/model.py):

- the folder is `models/<name>/` inside SHARED_DIR (its files may be links, as in a Hugging Face cache), with a
  config.json naming a causal LM architecture and safetensors weights (`model.safetensors`, or
  `model.safetensors.index.json` and its shards);
- `lora_top_layers` is at most the model's layer count;
- every `target_modules` entry names a module of the model the way PEFT matches a list: the module's full name,
  or its last dotted components (`q_proj`, `self_attn.q_proj`). Only modules with a 2-D weight (linear layers,
  embeddings) take LoRA; the causal LM's `lm_head` is not in the classifier the worker trains. With
  `lora_top_layers`, a suffix must match a module in those layers (a full name need not, as in PEFT). PEFT's
  `all-linear` shorthand works only as a string, and the worker passes a list: it is refused, as there. One
  rule is stricter than PEFT's: PEFT ignores an entry that matches nothing when another entry matches, which
  silently trains less than asked (a typo); here every entry must match.

A safetensors file starts with an 8-byte little-endian header length, then that many bytes of JSON mapping each
tensor name to its dtype, shape and offsets; only that header is read here.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.artifacts import MODEL_CONFIG_NAME, MODELS_DIR_NAME
from shared.errors import UserError
from shared.storage import UnsafePathError, resolve_inside

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# A 70B model's header is about 1 MB; past this the file is not a model this project trains.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# Replaced by the 3-way `score` head in the classifier the worker trains (AutoModelForSequenceClassification).
LM_HEAD_MODULES = frozenset({"lm_head"})
ALL_LINEAR = "all-linear"
# PEFT's layers_to_transform reads a module's layer index as its first numbered dotted component after another.
_LAYER_INDEX = re.compile(r".*?\.[^.]*\.(?P<index>\d+)\.")


class ModelFolderError(UserError, ValueError):
    """A model folder or LoRA option the worker would refuse; the message names the field and the fix."""


@dataclass(frozen=True)
class ModelFolder:
    """What a job's checks need to know of a base model folder.

    Attributes:
        label: how messages name it (`model 'x'`, or the default judge model).
        path: the folder.
        num_hidden_layers: decoder layers (config.json); None when it does not say.
        max_positions: longest input the model has positions for; None when config.json does not say.
        modules: names of the modules LoRA can go on (a 2-D weight), as in the classifier the worker trains;
            None when the folder holds no readable safetensors weights (only for the server's default model).
    """

    label: str
    path: Path
    num_hidden_layers: int | None
    max_positions: int | None
    modules: frozenset[str] | None


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor name → dtype, shape, offsets; `__metadata__` dropped).

    Raises:
        ModelFolderError: the file is too short, its header too long, or the header is not a JSON object.
    """
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ModelFolderError(f"{path.name} is not a safetensors file (shorter than its header length)")
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise ModelFolderError(f"{path.name} is not a safetensors file (header length {length})")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ModelFolderError(f"{path.name} is not a safetensors file (its header is not JSON)") from None
    if len(raw) != length or not isinstance(header, dict):
        raise ModelFolderError(f"{path.name} is not a safetensors file (truncated or malformed header)")
    header.pop("__metadata__", None)
    return header


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding the weights: the single file, or every shard the index names."""
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    index_path = folder / WEIGHTS_INDEX_NAME
    if not index_path.is_file():
        return []
    try:
        weight_map = json.loads(index_path.read_text()).get("weight_map")
    except (OSError, ValueError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFolderError(f"{WEIGHTS_INDEX_NAME} has no weight_map; the folder's weights cannot be read")
    shards = []
    for shard in sorted(set(map(str, weight_map.values()))):
        if "/" in shard or shard in ("", ".", ".."):  # a shard is a file of this folder, nothing else
            raise ModelFolderError(f"{WEIGHTS_INDEX_NAME} names a shard outside the folder ({shard[:80]!r})")
        if not (folder / shard).is_file():
            raise ModelFolderError(f"{WEIGHTS_INDEX_NAME} names shard {shard[:80]!r}, which is missing")
        shards.append(folder / shard)
    return shards


def lora_modules(tensor_shapes: dict[str, object]) -> frozenset[str]:
    """Module names (`model.layers.0.self_attn.q_proj`) of every 2-D `.weight` tensor, less the LM head."""
    modules = set()
    for name, info in tensor_shapes.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if name.endswith(".weight") and isinstance(shape, list) and len(shape) == 2:
            module = name[: -len(".weight")]
            if module not in LM_HEAD_MODULES:
                modules.add(module)
    return frozenset(modules)


def _first_int(config: dict, *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def read_model_folder(folder: Path, *, label: str, strict: bool = True) -> ModelFolder:
    """The folder's config.json and weight names, checked as the worker will load them.

    Args:
        folder: the model folder.
        label: how messages name it (`model 'x'`).
        strict: also require safetensors weights and a causal LM architecture (a model a request names); the
            server's own default model (MODEL_PATH) is only read for what it says.

    Raises:
        ModelFolderError: config.json is not JSON, or (strict) names no causal LM or the weights are missing.
    """
    config_path = folder / MODEL_CONFIG_NAME
    try:
        if config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelFolderError(
                f"{label}: {MODEL_CONFIG_NAME} is larger than a model config ({MAX_CONFIG_BYTES} bytes)"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise ModelFolderError(f"{label}: {MODEL_CONFIG_NAME} is not readable JSON") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{label}: {MODEL_CONFIG_NAME} is not a JSON object")
    if strict:
        architectures = config.get("architectures")
        names = [name for name in architectures if isinstance(name, str)] if isinstance(architectures, list) else []
        if not any(name.endswith(CAUSAL_LM_SUFFIXES) for name in names):
            raise ModelFolderError(
                f"{label} is not a causal language model (config.json architectures: {names[:4]}); train and synth"
                " need a folder like SmolLM2-135M-Instruct's (e.g. LlamaForCausalLM)"
            )
    try:
        files = _weight_files(folder)
        shapes: dict[str, object] = {}
        for path in files:
            shapes.update(read_safetensors_header(path))
    except OSError:
        raise ModelFolderError(f"{label}: its safetensors weights cannot be read") from None
    except ModelFolderError as exc:
        raise ModelFolderError(f"{label}: {exc}") from None
    if strict and not shapes:
        raise ModelFolderError(
            f"{label} has no safetensors weights ({WEIGHTS_NAME}, or {WEIGHTS_INDEX_NAME} and its shards); save"
            " the model with safe_serialization"
        )
    return ModelFolder(
        label=label,
        path=folder,
        num_hidden_layers=_first_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        max_positions=_first_int(config, "max_position_embeddings", "n_positions"),
        modules=lora_modules(shapes) if shapes else None,
    )


def resolve_base_model(shared_dir: Path, default_model_path: str, name: str | None, *, field: str) -> ModelFolder:
    """The base model a train or synth job names (`models/<name>/`), or the server's default model.

    Unlike a predict job's judge files (shared/storage.py: resolve_judge_files), no calibration is involved:
    a base model is what is trained, or what labels.

    Raises:
        UnsafePathError: the name points outside models/.
        ModelFolderError: the folder is missing or not a usable model; the message lists those that are.
    """
    models_dir = Path(shared_dir) / MODELS_DIR_NAME
    if name is None:
        folder = Path(default_model_path)
        label = f"the default model ({folder.name}, MODEL_PATH)"
        if not (folder / MODEL_CONFIG_NAME).is_file():
            raise ModelFolderError(f"{label} is missing (no config.json); run `make setup`, or name a model in {field}")
        return read_model_folder(folder, label=label, strict=False)
    try:
        folder = resolve_inside(models_dir, name)
    except UnsafePathError as exc:
        raise UnsafePathError(f"{field}: {exc}") from None
    if not (folder / MODEL_CONFIG_NAME).is_file():
        available = sorted(path.parent.name for path in models_dir.glob(f"*/{MODEL_CONFIG_NAME}"))
        raise ModelFolderError(
            f"{field}: model {name!r} not found (no models/{name}/{MODEL_CONFIG_NAME}); available under models/:"
            f" {available[:20]}"
        )
    try:
        return read_model_folder(folder, label=f"model {name!r}")
    except ModelFolderError as exc:
        raise ModelFolderError(f"{field}: {exc}") from None


# Models that fuse projections (Phi-3: qkv_proj, gate_up_proj) have no q_proj or up_proj: a request for the usual
# names means their fused module.
FUSED_MODULES = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
                 "up_proj": "gate_up_proj"}  # fmt: skip


def fused_target_modules(target_modules: Sequence[str], modules: Iterable[str]) -> list[str]:
    """`target_modules` with each entry the model lacks replaced by its fused module when the model has that one
    (q_proj, k_proj, v_proj → qkv_proj; gate_proj, up_proj → gate_up_proj), duplicates dropped, order kept."""
    modules = list(modules)
    resolved: list[str] = []
    for entry in target_modules:
        fused = FUSED_MODULES.get(entry)
        if fused is not None and not target_module_matches(entry, modules) and target_module_matches(fused, modules):
            entry = fused
        if entry not in resolved:
            resolved.append(entry)
    return resolved


def target_module_matches(entry: str, modules: Iterable[str]) -> list[str]:
    """The modules a `target_modules` entry selects, as PEFT matches a list: the full name, or a dotted suffix."""
    return [module for module in modules if module == entry or module.endswith(f".{entry}")]


def _layer_index(module: str) -> int | None:
    match = _LAYER_INDEX.match(module)
    return int(match.group("index")) if match else None


def check_lora_options(
    model: ModelFolder, *, target_modules: Sequence[str], lora_top_layers: int | None, max_length: int
) -> None:
    """Refuse LoRA options the worker would refuse (or that would silently train nothing) for this model.

    Raises:
        ModelFolderError: naming the field, what the model has, and what to ask for instead.
    """
    layers = model.num_hidden_layers
    if lora_top_layers is not None and layers is not None and lora_top_layers > layers:
        raise ModelFolderError(
            f"lora_top_layers={lora_top_layers} is more than the {layers} layers of {model.label}; ask for at most"
            f" {layers}, or leave it out for all of them"
        )
    if model.max_positions is not None and max_length > model.max_positions:
        raise ModelFolderError(
            f"max_length={max_length} is more than {model.label} has positions for ({model.max_positions}); ask for"
            f" at most {model.max_positions}"
        )
    if model.modules is None:
        return
    top = range(layers - lora_top_layers, layers) if lora_top_layers is not None and layers is not None else None
    for entry in fused_target_modules(target_modules, model.modules):
        if entry == ALL_LINEAR:
            raise ModelFolderError(
                f"target_modules: {ALL_LINEAR!r} is not supported here; list the modules, e.g."
                f" {_suggestions(model.modules)}"
            )
        matches = target_module_matches(entry, model.modules)
        if top is not None and entry not in model.modules:
            # With layers_to_transform, PEFT puts LoRA only on modules inside one of those layers, except on a module
            # named in full (its exact-name match skips the layer filter).
            matches = [module for module in matches if _layer_index(module) in top]
        if not matches:
            where = f" in its top {lora_top_layers} layers" if top is not None else ""
            raise ModelFolderError(
                f"target_modules: {entry[:80]!r} names no module of {model.label}{where} that LoRA can go on;"
                f" its modules include {_suggestions(model.modules)}"
            )


def _suggestions(modules: frozenset[str], limit: int = 12) -> list[str]:
    """The distinct last components of the modules (q_proj, up_proj, ...), the names a request usually gives."""
    return sorted({module.rsplit(".", 1)[-1] for module in modules})[:limit]
