#!/usr/bin/env bash
# The main job end to end on the embedded CPU default (no GPU, no Docker):
#   1. a train/holdout split of ../shared/data grouped by prompt,
#   2. `arena train --text-only` on the training rows: the default predictor's recipe (MiniLM + length/style
#      features, LightGBM on both orders, calibrated), fitted without the held-out rows so the score is honest,
#   3. the stack (Redis, worker, gateway, Flower) up; the held-out rows uploaded over REST; a predict job with
#      that predictor; progress followed; the submission downloaded and scored; the stack down.
# A plain predict job (no adapter) uses the same recipe fitted on all of ../shared/data (SHARED_DIR/models/default).
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/preference_pairs.csv}"
DEMO_DIR="${DEMO_DIR:-var/demo}"
export DEMO_ROWS="${DEMO_ROWS:-0}"  # 0: every held-out row
SHARED_DIR="$(PYTHONPATH="$ROOT" .venv-api/bin/python -c 'from shared.settings import get_settings; print(get_settings().SHARED_DIR)')"

mkdir -p "$DEMO_DIR"
echo "demo: grouped train/holdout split of $DATA"
scripts/arena split --input "$DATA" --output-dir "$DEMO_DIR/split"
echo "demo: fitting the text predictor on the training rows (arena train --text-only; about a minute, its texts embedded and cached by set-up)"
scripts/arena train --text-only --input "$DEMO_DIR/split/train.csv" --output-dir "$SHARED_DIR/adapters/demo-text" \
  > "$DEMO_DIR/text-predictor.json"
.venv-api/bin/python - "$DEMO_DIR/text-predictor.json" <<'EOF'
import json, sys
metrics = json.load(open(sys.argv[1]))
print(f"demo: grouped-CV log loss on the training rows {metrics['out_of_fold']['log_loss']:.4f},"
      f" fitted in {metrics['fit_seconds']} s")
EOF
echo "demo: predicting the held-out rows through the job stack"
DATA="$DEMO_DIR/split/holdout.csv" ADAPTER="demo-text" scripts/demo_stack.sh
