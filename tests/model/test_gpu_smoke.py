"""`GPU_SMOKE_DEVICE=cpu scripts/gpu_smoke.sh OUT`: the GPU smoke run's every step on the CPU, so it cannot rot.

The carried folder is made here as for the GPU machine (scripts/make_standin_model.py: the stand-in model with
SmolLM2-135M's tokenizer, a few hundred pairs of the shipped data), without the wheels (this environment has them).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_CARRIED_BYTES = 64 * 2**20


def test_the_smoke_run_passes_every_step_on_the_cpu(tmp_path):
    files = tmp_path / "carried"
    made = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "make_standin_model.py"), str(files), "--rows", "120"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    assert json.loads(made.stdout)["bytes"] < MAX_CARRIED_BYTES

    out = tmp_path / "out"
    env = dict(os.environ, GPU_SMOKE_DEVICE="cpu", GPU_SMOKE_FILES=str(files), ARENA_WORKER_PYTHON=sys.executable)
    run = subprocess.run(
        [str(REPO_ROOT / "scripts" / "gpu_smoke.sh"), str(out)], capture_output=True, text=True, timeout=900, env=env
    )
    summary = json.loads((out / "summary.json").read_text())
    assert run.returncode == 0, (summary, run.stdout[-3000:], run.stderr[-3000:])
    steps = summary["steps"]
    assert {name: step["status"] for name, step in steps.items()} == {
        "probe": "passed",
        "fork": "skipped",  # the code path ran; the verdict needs a GPU
        "train": "passed",
        "predict": "passed",
        "shape_8b": "passed",
        "judge_engines": "passed",
    }
    assert all(run["child_exit"] == 0 for run in (steps["fork"]["without_fix"], steps["fork"]["with_fix"]))
    assert steps["train"]["device"] == "cpu" and steps["train"]["steps"] == 2
    assert steps["train"]["precision"]["weights_dtype"] == "float32"
    assert steps["predict"]["rows"] > 0 and math.isfinite(steps["predict"]["log_loss"])
    assert steps["shape_8b"]["lora_weights_changed"] and steps["shape_8b"]["base_weights_unchanged"]
    assert steps["judge_engines"]["engines"]["transformers"]["status"] == "passed"
    assert (out / "smoke.log").stat().st_size > 0
