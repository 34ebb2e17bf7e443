#!/usr/bin/env bash
# The stack end to end over REST: up → upload a CSV built from ../shared/data → predict job → follow its
# progress → print the submission path and log loss → down (also on failure or Ctrl-C).
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/preference_pairs.csv}"
DEMO_ROWS="${DEMO_ROWS:-0}"  # 0: every row
# Smaller engine batches: the job reports progress after each one.
export JUDGE_CHUNK_PAIRS="${JUDGE_CHUNK_PAIRS:-4}"
[ -f "$DATA" ] || { echo "demo: no data at $DATA; set DATA to a labelled Kaggle arena CSV" >&2; exit 2; }

trap 'scripts/stack.sh down' EXIT
scripts/stack.sh up
API_KEY="${API_KEY:-$(cat var/run/api_key)}" PYTHONPATH="$ROOT" .venv-api/bin/python scripts/demo_stack.py \
  --data "$DATA" --rows "$DEMO_ROWS" --url "http://${API_HOST:-127.0.0.1}:${API_PORT:-8000}" \
  ${CALIBRATION:+--calibration "$CALIBRATION"} ${ADAPTER:+--adapter "$ADAPTER"}
