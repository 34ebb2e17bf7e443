#!/usr/bin/env bash
# The main job end to end on the embedded CPU default: a grouped split of ../shared/data, a calibrator
# fitted on some training rows, a Kaggle submission for held-out rows, and its score.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/preference_pairs.csv}"
DEMO_DIR="${DEMO_DIR:-var/demo}"
CALIBRATION_ROWS="${CALIBRATION_ROWS:-120}"
DEMO_ROWS="${DEMO_ROWS:-40}"
arena() { scripts/arena "$@"; }

mkdir -p "$DEMO_DIR"
echo "demo: grouped train/holdout split of $DATA"
arena split --input "$DATA" --output-dir "$DEMO_DIR/split"
echo "demo: fitting a calibrator on $CALIBRATION_ROWS training rows"
arena calibrate --input "$DEMO_DIR/split/train.csv" --limit "$CALIBRATION_ROWS" --output "$DEMO_DIR/calibration.json"
echo "demo: predicting $DEMO_ROWS held-out rows (Kaggle test format, no labels)"
head_rows() { "$ROOT/.venv-worker/bin/python" -c "import pandas as p,sys; p.read_csv(sys.argv[1],dtype=str,keep_default_na=False).head(int(sys.argv[3])).to_csv(sys.argv[2],index=False)" "$@"; }
head_rows "$DEMO_DIR/split/holdout_test.csv" "$DEMO_DIR/test.csv" "$DEMO_ROWS"
arena predict --input "$DEMO_DIR/test.csv" --output "$DEMO_DIR/submission.csv" --calibration "$DEMO_DIR/calibration.json"
echo "demo: scoring against the held-out labels"
head_rows "$DEMO_DIR/split/holdout.csv" "$DEMO_DIR/holdout_labelled.csv" "$DEMO_ROWS"
arena evaluate --input "$DEMO_DIR/holdout_labelled.csv" --predictions "$DEMO_DIR/submission.csv"
echo "demo: submission written to $DEMO_DIR/submission.csv"
head -n 4 "$DEMO_DIR/submission.csv"
