#!/usr/bin/env bash
# GPU check of the training and classifier path (transformers + PEFT on CUDA; no vLLM needed):
# train a LoRA judge on the GPU, then predict a held-out file with it on the GPU, and keep the figures.
#
#   [NAME=gpu-judge] scripts/gpu_check.sh TRAIN_CSV HOLDOUT_CSV OUT_DIR [extra `arena train` options...]
#
# OUT_DIR/NAME.tar.gz holds the adapter folder and its results (train/predict/evaluate JSON, the holdout
# submission, the adapter's holdout logits for `arena calibrate --votes`, a reliability plot).
#
# Runs in any Python that has torch (CUDA), transformers, peft, pandas and the worker requirements
# (ARENA_WORKER_PYTHON, default python3). The base model is MODEL_PATH or the embedded SmolLM2-135M
# (`arena setup-model`). The text model is left out (--no-text-model) since GPU images need not carry the
# MiniLM wheel: `arena stack --adapter DIR --input TRAIN_CSV` adds it afterwards on any machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
train_csv="$1" holdout_csv="$2" out="$3"
shift 3
export ARENA_WORKER_PYTHON="${ARENA_WORKER_PYTHON:-python3}" PYTHONUNBUFFERED=1
arena="$ROOT/scripts/arena"
name="${NAME:-gpu-judge}"
results="${SHARED_DIR:-$ROOT/var/shared}/gpu-check/$name"
mkdir -p "$out" "$results"
nvidia-smi -L || true
"$ARENA_WORKER_PYTHON" -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__, "peft", peft.__version__)'
"$arena" setup-model
adapters="${SHARED_DIR:-$ROOT/var/shared}/adapters"
start=$(date +%s)
"$arena" train --input "$train_csv" --output-dir "$adapters/$name" --device cuda --no-text-model "$@" \
  > "$results/$name.train.json"
echo "train: $(( $(date +%s) - start )) s"
start=$(date +%s)
"$arena" predict --input "$holdout_csv" --output "$results/$name.holdout.csv" --adapter "$adapters/$name" \
  --engine transformers --save-votes "$results/$name.holdout-logits.npz" > "$results/$name.predict.json"
echo "predict: $(( $(date +%s) - start )) s"
"$arena" evaluate --input "$holdout_csv" --predictions "$results/$name.holdout.csv" --plot "$results/$name.reliability.png" \
  > "$results/$name.evaluate.json"
tar -C "$adapters" -czf "$out/$name.tar.gz" --exclude checkpoints "$name"
"$ARENA_WORKER_PYTHON" - "$results" "$name" <<'EOF'
import json, sys
out, name = sys.argv[1], sys.argv[2]
train = json.load(open(f"{out}/{name}.train.json"))
evaluation = json.load(open(f"{out}/{name}.evaluate.json"))
keys = ("steps", "epochs_done", "stop_reason", "seconds_per_step", "train_seconds_this_run", "device")
print(json.dumps({k: train.get(k) for k in keys}, indent=1))
print("validation", json.dumps({k: train["validation"].get(k) for k in ("log_loss", "accuracy", "best_step")}))
print("calibration", json.dumps(train["calibration"], indent=1, default=str)[:1500])
print("holdout", json.dumps(evaluation, default=str)[:800])
EOF
