#!/usr/bin/env bash
# The main job end to end on the embedded CPU default (no GPU, no Docker):
#   1. a train/holdout split of ../shared/data grouped by prompt,
#   2. `arena calibrate` on some training rows (calibrator saved in shared storage),
#   3. the stack (Redis, worker, gateway, Flower) up; held-out rows uploaded over REST; a predict job with
#      that calibrator; progress followed; the submission downloaded and scored; the stack down.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/preference_pairs.csv}"
DEMO_DIR="${DEMO_DIR:-var/demo}"
CALIBRATION_ROWS="${CALIBRATION_ROWS:-120}"
export DEMO_ROWS="${DEMO_ROWS:-40}"
SHARED_DIR="$(PYTHONPATH="$ROOT" .venv-api/bin/python -c 'from shared.settings import get_settings; print(get_settings().SHARED_DIR)')"

mkdir -p "$DEMO_DIR"
echo "demo: grouped train/holdout split of $DATA"
scripts/arena split --input "$DATA" --output-dir "$DEMO_DIR/split"
echo "demo: fitting a calibrator on $CALIBRATION_ROWS training rows (arena calibrate)"
scripts/arena calibrate --input "$DEMO_DIR/split/train.csv" --limit "$CALIBRATION_ROWS" \
  --output "$SHARED_DIR/models/demo-calibration.json"
echo "demo: predicting $DEMO_ROWS held-out rows through the job stack"
DATA="$DEMO_DIR/split/holdout.csv" CALIBRATION="models/demo-calibration.json" scripts/demo_stack.sh
