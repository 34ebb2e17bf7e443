import logging

import pytest

from workers.common import hardware
from workers.judge import engines

AVX2_ONLY = "flags\t\t: fpu sse sse2 avx avx2 fma\n"
AVX512_BF16 = "flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cpu_flags: str, *, cuda: bool = False) -> None:
        monkeypatch.setattr(hardware, "_cpu_flags", lambda: cpu_flags)
        monkeypatch.setattr(engines, "cuda_available", lambda: cuda)

    return set_machine


def test_auto_runs_float32_on_a_cpu_that_only_emulates_bf16(machine):
    machine(AVX2_ONLY)
    assert engines.resolve_dtype("auto") == "float32"


@pytest.mark.parametrize("cpu_flags", [AVX512_BF16, AMX])
def test_auto_runs_bfloat16_where_the_cpu_has_bf16_hardware(machine, cpu_flags):
    machine(cpu_flags)
    assert engines.resolve_dtype("auto") == "bfloat16"


def test_auto_runs_bfloat16_on_a_gpu_whatever_the_cpu(machine):
    machine(AVX2_ONLY, cuda=True)
    assert engines.resolve_dtype("auto") == "bfloat16"


def test_an_explicit_dtype_is_kept_and_emulated_bf16_is_named_in_a_warning(machine, caplog):
    machine(AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger=engines.log.name):
        assert engines.resolve_dtype("float16") == "float16"
        assert not caplog.records
        assert engines.resolve_dtype("bfloat16") == "bfloat16"
    assert "JUDGE_DTYPE=auto or float32" in caplog.text


def test_an_engine_fixed_on_the_cpu_follows_the_cpu_even_beside_a_gpu(machine):
    machine(AVX2_ONLY, cuda=True)
    assert engines.resolve_dtype("auto", device="cpu") == "float32"
    assert engines.resolve_dtype("auto", device="cuda") == "bfloat16"
    machine(AVX512_BF16, cuda=False)
    assert engines.resolve_dtype("auto", device="cpu") == "bfloat16"
