"""The GPU smoke run's fork verdict (issue 30 blocker 1), from the two child runs a GPU machine would report."""

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_smoke", REPO_ROOT / "scripts" / "gpu_smoke.py")
gpu_smoke = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_smoke)

BAD_FORK = "RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, ..."
OK = "CUDA initialised in the forked child"


def run(exit_code: int, message: str) -> dict:
    return {"probed_cuda": True, "child_exit": exit_code, "child": message}


def test_the_fix_passes_and_the_failure_without_it_is_reported_as_reproduced():
    verdict = gpu_smoke.fork_verdict({"without_fix": run(1, BAD_FORK), "with_fix": run(0, OK)}, on_cuda=True)
    assert verdict["status"] == "passed" and verdict["failure_reproduced_without_fix"]


def test_a_child_that_fails_with_the_fix_fails_the_step():
    verdict = gpu_smoke.fork_verdict({"without_fix": run(1, BAD_FORK), "with_fix": run(1, BAD_FORK)}, on_cuda=True)
    assert verdict["status"] == "failed" and "even with" in verdict["reason"]


def test_no_failure_without_the_fix_passes_but_says_it_was_not_reproduced():
    verdict = gpu_smoke.fork_verdict({"without_fix": run(0, OK), "with_fix": run(0, OK)}, on_cuda=True)
    assert verdict["status"] == "passed" and not verdict["failure_reproduced_without_fix"]
    assert "not reproduced" in verdict["reason"]


def test_on_a_cpu_the_code_path_runs_and_the_verdict_is_skipped():
    cpu = {"probed_cuda": False, "child_exit": 0, "child": "no CUDA here"}
    assert gpu_smoke.fork_verdict({"without_fix": cpu, "with_fix": cpu}, on_cuda=False)["status"] == "skipped"
    broken = {**cpu, "child_exit": 1}
    assert gpu_smoke.fork_verdict({"without_fix": cpu, "with_fix": broken}, on_cuda=False)["status"] == "failed"
