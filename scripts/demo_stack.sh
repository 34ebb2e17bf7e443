#!/usr/bin/env bash
# The stack end to end over REST: up → upload a CSV built from ../shared/data → predict job → follow its
# progress → print the submission path and log loss → down (also on failure or Ctrl-C; DEMO_KEEP_UP=1 leaves a
# successful run's stack up) → the URL of the job's report on the results page, last.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/preference_pairs.csv}"
DEMO_ROWS="${DEMO_ROWS:-0}"  # 0: every row
# Smaller engine batches: the job reports progress after each one.
export JUDGE_CHUNK_PAIRS="${JUDGE_CHUNK_PAIRS:-4}"
[ -f "$DATA" ] || { echo "demo: no data at $DATA; set DATA to a labelled Kaggle arena CSV" >&2; exit 2; }

OUTPUT=var/demo-stack/submission.csv
REPORT_URL_FILE="$(dirname "$OUTPUT")/report_url.txt"  # written by demo_stack.py once the job exists
rm -f "$REPORT_URL_FILE"
finish() {
  local status=$? keep_up=0
  if [ "${DEMO_KEEP_UP:-0}" = 1 ] && [ "$status" -eq 0 ]; then keep_up=1; else scripts/stack.sh down; fi
  [ -s "$REPORT_URL_FILE" ] || return 0
  if [ "$keep_up" = 1 ]; then
    echo "demo: the stack stays up (make down stops it). The job's report: $(cat "$REPORT_URL_FILE")"
  else
    echo "demo: the job's report: $(cat "$REPORT_URL_FILE")"
    echo "      (make up serves it again; DEMO_KEEP_UP=1 make demo leaves the stack up at the end)"
  fi
  echo "      The page asks for the API key once: var/run/api_key, unless you set API_KEY."
}
trap finish EXIT
scripts/stack.sh up
API_KEY="${API_KEY:-$(cat var/run/api_key)}" PYTHONPATH="$ROOT" .venv-api/bin/python scripts/demo_stack.py \
  --data "$DATA" --rows "$DEMO_ROWS" --output "$OUTPUT" --url "http://${API_HOST:-127.0.0.1}:${API_PORT:-8000}" \
  ${CALIBRATION:+--calibration "$CALIBRATION"} ${ADAPTER:+--adapter "$ADAPTER"}
