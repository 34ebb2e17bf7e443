"""The judge's dtype on a GPU follows its compute capability, read without initialising CUDA (NVML)."""

import pytest

from workers.common import hardware
from workers.judge import engines


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), "float16"), ((7, 0), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16"), (None, "bfloat16")],
)
def test_auto_on_a_gpu_is_bf16_from_ampere_and_fp16_before(monkeypatch, capability, expected):
    monkeypatch.setattr(engines, "cuda_compute_capability", lambda: capability)
    assert engines.resolve_dtype("auto", device="cuda") == expected
    assert engines.resolve_dtype("float32", device="cuda") == "float32"  # asked for: as given


def test_the_capability_probe_answers_none_here_and_leaves_cuda_uninitialised():
    import torch

    hardware.cuda_compute_capability.cache_clear()
    assert hardware.cuda_compute_capability() is None  # no NVML library on a machine without an NVIDIA driver
    assert not torch.cuda.is_initialized()
