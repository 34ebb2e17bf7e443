"""The GPU LoRA benchmark's code path, run on the CPU with a tiny random model (the GPU run uses the same code).

The benchmark measures the trainer's own path (workers/training): its device plan, model preparation and step.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_lora_benchmark_trains_only_the_adapter_and_reports_its_figures():
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "bench" / "bench_gpu_lora.py"),
            "--device",
            "cpu",
            "--random-shape",
            "tiny",
            "--steps",
            "3",
            "--max-length",
            "48",
            "--pairs",
            "6",
            "--gradient-checkpointing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout)
    assert figures["lora_weights_changed"] and figures["base_weights_unchanged"]
    assert figures["gradient_checkpointing"] and figures["probabilities_sum_to_one"]
    # The CPU plan of the trainer: fp32 weights, CPU autocast as before; the cap and free memory are CUDA's only.
    assert figures["plan"]["weights_dtype"] == "float32" and figures["plan"]["gradient_checkpointing"]
    assert figures["batch_token_cap"] is None and "free_memory_mib" not in figures
    assert figures["steps_per_second"] > 0 and figures["train_tokens_per_second"] > 0
    assert figures["predict_pairs"] == 6 and figures["peak_memory_mib"] > 0


def test_the_benchmark_builds_its_model_and_steps_with_the_trainers_functions(monkeypatch):
    """Not a copy of the trainer's code that can drift: the trainer's own functions, called by the benchmark."""
    import importlib.util

    import workers.training.model as training_model

    calls: list[str] = []
    for name in ("prepare_lora_model", "build_optimizer", "optimizer_step", "make_grad_scaler"):
        original = getattr(training_model, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(training_model, name, spy)
    spec = importlib.util.spec_from_file_location(
        "bench_gpu_lora", REPO_ROOT / "scripts" / "bench" / "bench_gpu_lora.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--device", "cpu", "--random-shape", "tiny", "--steps", "2", "--max-length", "32"])
    args.pairs = 2
    figures = bench.run(args)
    assert calls.count("optimizer_step") == 2 and {"prepare_lora_model", "build_optimizer"} <= set(calls)
    assert not figures["gradient_checkpointing"]  # the trainer's CPU default when the flag is not given
