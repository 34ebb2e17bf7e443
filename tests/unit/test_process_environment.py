"""Issue 30, blocker 1: the environment that keeps CUDA fork-safe is set before torch loads, at every entry point,
and the CUDA probe does not initialise CUDA. On a GPU host a probe that initialises CUDA before vLLM forks its
engine fails the first engine; here we test the decision: the order of environment and import, and the probe's
own call."""

import json
import os
import subprocess
import sys

import pytest

from shared.settings import REPO_ROOT
from workers.common import hardware

CUDA_NAMES = ("PYTORCH_NVML_BASED_CUDA_CHECK", "VLLM_WORKER_MULTIPROC_METHOD")

# Records the environment at the moment anything first imports torch, then lets the import go on.
WATCH_TORCH_IMPORT = """
import json, os, sys
NAMES = {names!r}
seen = {{}}

class WatchTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.update({{key: os.environ.get(key) for key in NAMES}})
        return None

sys.meta_path.insert(0, WatchTorch())
"""


def run_fresh(body: str) -> dict:
    script = WATCH_TORCH_IMPORT.format(names=list(hardware.PROCESS_ENVIRONMENT)) + body
    environment = {key: value for key, value in os.environ.items() if key not in hardware.PROCESS_ENVIRONMENT}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**environment, "PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_environment_names_the_nvml_probe_and_spawn():
    assert hardware.PROCESS_ENVIRONMENT["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    assert hardware.PROCESS_ENVIRONMENT["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_the_celery_worker_sets_it_at_import_before_torch_loads():
    seen = run_fresh(
        "import workers.celery_app\n"
        "loaded = 'torch' in sys.modules\n"
        "import torch\n"
        "print(json.dumps({'torch_at_import': loaded, 'seen': seen}))\n"
    )
    assert seen["torch_at_import"] is False
    assert seen["seen"] == hardware.PROCESS_ENVIRONMENT


def test_the_cli_sets_it_before_a_command_runs():
    # The command is replaced by one that imports torch first thing: what it sees is what any command would.
    seen = run_fresh(
        "import workers.cli.train as train_commands\n"
        "def import_torch(args, settings):\n"
        "    import torch\n"
        "    return {}\n"
        "train_commands.command_split = import_torch\n"
        "from workers.cli.main import main\n"
        "rc = main(['split', '--input', 'in.csv', '--output-dir', 'out'])\n"
        "print(json.dumps({'rc': rc, 'seen': seen}))\n"
    )
    assert seen["rc"] == 0
    assert seen["seen"] == hardware.PROCESS_ENVIRONMENT


def test_a_value_already_set_wins(monkeypatch):
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "fork")
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    hardware.prepare_process_environment()
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


def test_the_cuda_probe_asks_nvml_and_leaves_cuda_uninitialised(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)  # an entry point that forgot it
    real_is_available = torch.cuda.is_available
    asked_with: list[str | None] = []

    def recording_is_available() -> bool:
        asked_with.append(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"))
        return real_is_available()

    monkeypatch.setattr(torch.cuda, "is_available", recording_is_available)
    assert hardware.cuda_available() in (True, False)
    assert asked_with == ["1"]  # torch reads it at call time: with it, is_available() counts devices through NVML
    assert not torch.cuda.is_initialized()


def test_the_judge_and_encoder_probe_through_it():
    """No module of the worker calls torch.cuda.is_available() itself, except the trainer's device choice (it runs
    after the entry point's environment, and never before a vLLM engine in the same call)."""
    offenders = []
    for path in (REPO_ROOT / "workers").rglob("*.py"):
        if path.name == "hardware.py" or path.parent.name == "training":
            continue
        if "torch.cuda.is_available(" in path.read_text():
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []


def test_the_gpu_image_sets_it_for_every_process():
    dockerfile = (REPO_ROOT / "compose" / "Dockerfile.worker-gpu").read_text()
    env_lines = [line for line in dockerfile.splitlines() if line.startswith("ENV ")]
    for name in CUDA_NAMES:
        assert any(f"{name}={hardware.PROCESS_ENVIRONMENT[name]}" in line for line in env_lines), name
