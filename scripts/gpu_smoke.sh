#!/usr/bin/env bash
# GPU smoke run (issue 30): probe, the fork-safety check, a real `arena train --device cuda` of a few steps,
# predict + evaluate with that adapter, an 8B-shaped model through the trainer's code, the judge engines present.
#
#   scripts/gpu_smoke.sh OUT                         # on a GPU machine (torch, transformers, peft; no vLLM needed)
#   GPU_SMOKE_DEVICE=cpu scripts/gpu_smoke.sh OUT    # the same steps on a CPU (tests/unit/test_gpu_smoke.py)
#
# OUT/summary.json holds each step's figures and status, OUT/smoke.log the commands and their output; exit 1 when
# a step failed (a step skipped for a missing package says which). It reads the carried folder GPU_SMOKE_FILES
# (default var/gpu-smoke), made beforehand by `scripts/make_standin_model.py var/gpu-smoke --wheels`: a stand-in
# model, a few hundred pairs, and wheels of the packages the CLI needs that a bare GPU image may lack (pydantic,
# pydantic-settings and theirs), installed here into a private folder only when they are missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:?usage: scripts/gpu_smoke.sh OUT}"
files="${GPU_SMOKE_FILES:-$ROOT/var/gpu-smoke}"
if [[ -z "${ARENA_WORKER_PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv-worker/bin/python" ]]; then ARENA_WORKER_PYTHON="$ROOT/.venv-worker/bin/python"; else ARENA_WORKER_PYTHON=python3; fi
fi
export ARENA_WORKER_PYTHON GPU_SMOKE_FILES="$files" PYTHONUNBUFFERED=1
# The probe of blocker 1: set here for every step but the fork check, which runs with and without it.
export PYTORCH_NVML_BASED_CUDA_CHECK=1 VLLM_WORKER_MULTIPROC_METHOD=spawn
if ! "$ARENA_WORKER_PYTHON" -c 'import pydantic_settings' 2>/dev/null && compgen -G "$files/wheels/*.whl" >/dev/null; then
  site="$(mktemp -d)/site"
  "$ARENA_WORKER_PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$files"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_smoke: installed the carried wheels into $site: $(cd "$files/wheels" && ls | tr '\n' ' ')"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$ARENA_WORKER_PYTHON" "$ROOT/scripts/gpu_smoke.py" "$out"
