"""The REST demo against a running stack: upload a CSV, submit a predict job, follow it, fetch the submission,
and say where the job's report is (the results page, /ui#/jobs/<id>; its URL also goes to report_url.txt beside
the submission, for scripts/demo_stack.sh to repeat once the stack is down).

Run by scripts/demo_stack.sh (which brings the stack up and down); on its own:
    API_KEY=$(cat var/run/api_key) .venv-api/bin/python scripts/demo_stack.py --data ../shared/data/preference_pairs.csv
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

KAGGLE_COLUMNS = ["id", "model_a", "model_b", "prompt", "response_a", "response_b"]
LABEL_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]


def build_test_csv(data: Path, *, rows: int) -> bytes:
    """The first `rows` labelled rows of `data` (a held-out split), in the Kaggle train.csv schema, with the `source`
    column when there is one (the job's report then has figures per source)."""
    frame = pd.read_csv(data, dtype=str, keep_default_na=False)
    frame = frame.head(rows) if rows > 0 else frame
    extra = [column for column in ("source",) if column in frame.columns]
    return frame[KAGGLE_COLUMNS + LABEL_COLUMNS + extra].to_csv(index=False).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--data", type=Path, required=True, help="a Kaggle arena CSV with labels")
    parser.add_argument("--rows", type=int, default=0, help="the first N rows (0: all)")
    parser.add_argument("--calibration", help="calibration JSON relative to SHARED_DIR (under models/ or adapters/)")
    parser.add_argument("--adapter", help="adapter or predictor name under SHARED_DIR/adapters/ (default: none)")
    parser.add_argument("--output", type=Path, default=Path("var/demo-stack/submission.csv"))
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    api_key = os.environ.get("API_KEY")
    if not api_key:
        print("demo: set API_KEY (scripts/stack.sh writes it to var/run/api_key)", file=sys.stderr)
        return 2

    client = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    health = client.get("/readyz").json()
    print(f"demo: gateway healthy; workers {health['workers']}")

    content = build_test_csv(args.data, rows=args.rows)
    response = client.post("/v1/datasets", files={"file": ("demo.csv", io.BytesIO(content), "text/csv")})
    response.raise_for_status()
    dataset = response.json()
    print(f"demo: POST /v1/datasets → {response.status_code} {json.dumps(dataset)}")

    options = {"calibration": args.calibration, "adapter": args.adapter}
    job_request = {"dataset": dataset["id"], **{name: value for name, value in options.items() if value}}
    response = client.post("/v1/jobs/predict", json=job_request)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    print(f"demo: POST /v1/jobs/predict → {response.status_code} job {job_id}")
    report_url = f"{args.url.rstrip('/')}/ui#/jobs/{job_id}"  # the page asks for the key: never in the URL
    args.output.parent.mkdir(parents=True, exist_ok=True)
    (args.output.parent / "report_url.txt").write_text(report_url + "\n")
    print(f"demo: the job's report, live: {report_url}")

    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        finished = sum(chunk["state"] == "succeeded" for chunk in job["chunks"])
        running = sorted({chunk["worker"] for chunk in job["chunks"] if chunk["state"] == "running"})
        line = (
            f"demo: {job['state']:<9} {job['progress']['done']}/{job['progress']['total']} rows, chunks"
            f" {finished}/{len(job['chunks'])} done, judging on {', '.join(running) or '-'}"
        )
        if line != last:
            print(line, flush=True)
            last = line
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            print(f"demo: gave up after {args.timeout}s", file=sys.stderr)
            return 1
        time.sleep(1)
    if job["state"] != "succeeded":
        print(f"demo: job {job['state']}: {job['error']}", file=sys.stderr)
        return 1

    submission = client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv")
    submission.raise_for_status()
    args.output.write_bytes(submission.content)
    metrics = client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json").json()
    print(f"demo: submission in shared storage: {metrics['submission_path']}")
    print(f"demo: submission downloaded to {args.output}")
    print("\n".join(submission.text.splitlines()[:4]))
    if "log_loss" in metrics:
        print(
            f"demo: log loss on the {metrics['rows']} labelled rows: {metrics['log_loss']:.4f}"
            f" (uniform guess: 1.0986); accuracy {metrics.get('accuracy', float('nan')):.3f}"
        )
    print(f"demo: {job['timings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
