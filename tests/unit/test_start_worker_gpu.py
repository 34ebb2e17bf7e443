"""Issue 30, item 9: a gpu.N worker container that sees no GPU stops at start with the reason (none here)."""

import os
import subprocess
import sys

from shared.settings import REPO_ROOT

START_WORKER = REPO_ROOT / "compose" / "start-worker.sh"


def start(queue: str, tmp_path) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"  # the image's `python`: here the worker environment's, torch included
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT)}
    environment["SHARED_DIR"] = str(tmp_path / "shared")
    return subprocess.run(["bash", str(START_WORKER), queue], capture_output=True, text=True, env=environment)


def test_a_gpu_worker_without_a_gpu_stops_with_the_reason(tmp_path):
    result = start("gpu.0", tmp_path)
    assert result.returncode == 1
    assert "gpu.0 sees no GPU" in result.stderr and "NVIDIA container toolkit" in result.stderr
    assert not (tmp_path / "shared").exists()  # before anything else: no set-up, no lock


def test_a_cpu_worker_is_not_asked_for_one(tmp_path):
    result = start("cpu", tmp_path)
    assert "sees no GPU" not in result.stderr  # it goes on (and stops here only at `cd /app`, outside the image)
