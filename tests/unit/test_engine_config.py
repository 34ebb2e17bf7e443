"""Engine settings reach every engine through one EngineConfig, the synth teacher's included."""

import dataclasses

import pytest

from shared.settings import Settings, get_settings
from workers.judge import engines
from workers.judge.engines import EngineConfig


def test_defaults_are_the_settings_defaults():
    assert EngineConfig() == EngineConfig.from_settings(Settings(_env_file=None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        EngineConfig().dtype = "float32"
    with pytest.raises(TypeError):
        EngineConfig("vllm")  # keyword-only


def test_from_settings_reads_every_engine_setting():
    settings = Settings(
        _env_file=None,
        JUDGE_ENGINE="transformers",
        MAX_MODEL_LEN=4096,
        JUDGE_DTYPE="float32",
        ENFORCE_EAGER=True,
        VLLM_CPU_KVCACHE_GIB=3,
        VLLM_CPU_BLOCK_SIZE=64,
        VLLM_CPU_THREADS=1,
        GPU_MEMORY_UTILIZATION=0.5,
    )
    config = EngineConfig.from_settings(settings, enable_prefix_caching=False)
    assert (config.kind, config.max_model_len, config.dtype, config.enforce_eager) == (
        "transformers",
        4096,
        "float32",
        True,
    )
    assert (config.kv_cache_gib, config.gpu_memory_utilization, config.enable_prefix_caching) == (3, 0.5, False)
    assert config.cpu_threads == 1
    assert config.cpu_block_size == 64


def test_the_cpu_block_size_reaches_vllm_on_cpu_only(monkeypatch):
    monkeypatch.setattr(engines, "_set_vllm_cpu_threads", lambda threads: None)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # vllm_options sets it when absent; restored after the test
    monkeypatch.setattr(engines, "cuda_available", lambda: False)
    assert EngineConfig(cpu_block_size=64).vllm_options()["block_size"] == 64
    monkeypatch.setattr(engines, "cuda_available", lambda: True)
    assert "block_size" not in EngineConfig(cpu_block_size=64).vllm_options()  # vLLM's GPU default stays


def test_a_block_size_vllm_cpu_cannot_use_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multiple of 32"):
        Settings(_env_file=None, VLLM_CPU_BLOCK_SIZE=48)


def test_the_synth_teacher_honours_gpu_memory_utilization(monkeypatch):
    """It used to be dropped: the teacher's engine always took vLLM's 0.85 whatever GPU_MEMORY_UTILIZATION said."""
    from workers.jobs.synth import teacher_engine_config
    from workers.synth.labelling import SynthConfig, Teacher

    started = []

    class RecordingEngine:
        def __init__(self, model_path, *, adapter_dir=None, config):
            started.append(config)

        def generate_json(self, *args, **kwargs): ...

    monkeypatch.setattr(engines, "VllmEngine", RecordingEngine)
    settings = Settings(
        _env_file=None, GPU_MEMORY_UTILIZATION=0.42, TEACHER_TENSOR_PARALLEL=2, JUDGE_ENGINE="transformers"
    )
    config = SynthConfig(
        input_path="unused.csv", output_dir="unused", teacher_model=get_settings().judge_model_path, seed=7
    )
    Teacher(config, engine_config=teacher_engine_config(settings))
    [engine_config] = started
    assert engine_config.gpu_memory_utilization == 0.42
    assert (engine_config.kind, engine_config.tensor_parallel_size, engine_config.seed) == ("vllm", 2, 7)
    assert engine_config.max_model_len == config.max_model_len


def test_a_synth_job_on_a_worker_set_for_a_teacher_across_gpus_fails_with_the_reason(tmp_path):
    from workers.jobs.synth import synth_config_from_params
    from workers.synth.labelling import SynthError

    settings = Settings(_env_file=None, SHARED_DIR=tmp_path, TEACHER_TENSOR_PARALLEL=2)
    with pytest.raises(SynthError, match="every worker sees exactly one GPU.*set TEACHER_TENSOR_PARALLEL=1"):
        synth_config_from_params(settings, {"dataset": "d" * 32}, job_id="j" * 32)
