"""The GPU LoRA benchmark's code path, run on the CPU with a tiny random model (the GPU run uses the same code)."""

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
    assert figures["steps_per_second"] > 0 and figures["train_tokens_per_second"] > 0
    assert figures["predict_pairs"] == 6 and figures["peak_memory_mib"] > 0
