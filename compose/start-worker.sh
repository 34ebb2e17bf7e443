#!/usr/bin/env bash
# One Celery worker for one queue (gpu.N or cpu): solo pool, one task at a time, task events on for Flower.
# The embedded models (SmolLM2 judge, MiniLM text encoder) and the default predictor are put into the shared volume
# on first start.
set -euo pipefail
QUEUE="${1:?usage: start-worker.sh gpu.N|cpu}"
# A gpu.N worker that sees no GPU (no NVIDIA container toolkit, a device_ids beyond the host's GPUs) would take GPU
# work and run it on the CPU, or fail each job: it stops here with the reason instead (probed through NVML,
# without initialising CUDA).
if [[ "$QUEUE" == gpu.* ]] && ! python -c 'import sys; from workers.common.hardware import cuda_available; sys.exit(not cuda_available())'; then
  echo "start-worker: $QUEUE sees no GPU (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}): install the NVIDIA container" \
    "toolkit, give the container a GPU (device_ids) that exists, or start a cpu worker instead" >&2
  exit 1
fi
cd /app
# Several workers start at once (--scale, a host with 8 GPUs, several hosts): one of them sets up the shared models
# while the others wait on this lock (flock, which the shared storage must give across hosts), then find them done.
mkdir -p "$SHARED_DIR"
exec 9>"$SHARED_DIR/.setup.lock"
flock 9
if { [ -z "${MODEL_PATH:-}" ] && [ ! -f "$SHARED_DIR/models/SmolLM2-135M-Instruct/config.json" ]; } ||
   { [ -z "${TEXT_ENCODER_PATH:-}" ] && [ ! -f "$SHARED_DIR/models/all-MiniLM-L6-v2/config.json" ]; }; then
  scripts/arena setup-model
fi
# The default predictor (a text model) that plain predict jobs use: fitted once on DEFAULT_TRAIN_CSV, refitted
# only when that CSV or the text model's format changes.
if [ -f "${DEFAULT_TRAIN_CSV:-}" ]; then
  scripts/arena setup-default
elif [ ! -f "$SHARED_DIR/models/${DEFAULT_PREDICTOR:-default}/text_model.json" ]; then
  echo "start-worker: no default predictor and no DEFAULT_TRAIN_CSV (${DEFAULT_TRAIN_CSV:-unset}): plain predict jobs" \
    "are refused until you mount a labelled arena CSV there (ARENA_DATA_DIR) or fit one with" \
    "'scripts/arena train --text-only --input FILE.csv --output-dir \$SHARED_DIR/models/default'" >&2
fi
flock -u 9
exec 9>&-
# A GPU worker also consumes the shared gpu queue, where predict chunks wait for whichever worker is free, on any
# host. The name carries the container's host name (unique per container; WORKER_NAME overrides the part before @).
case "$QUEUE" in
  gpu.[0-9]*) CONSUMES="$QUEUE,gpu" ;;
  *) CONSUMES="$QUEUE" ;;
esac
exec python -m celery -A workers.celery_app worker -Q "$CONSUMES" -n "${WORKER_NAME:-${QUEUE/./}}@%h" \
  --pool=solo --concurrency=1 -E --loglevel="${LOG_LEVEL:-INFO}"
