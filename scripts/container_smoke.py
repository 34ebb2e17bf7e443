"""REST smoke test of a running stack, standard library only (runs on a host without the project's venvs).

Waits for GET /readyz to be green, uploads a small unlabelled Kaggle-schema CSV, runs a predict job, downloads
submission.csv and checks it (same ids in the same order, three probabilities per row summing to ~1), checks
that Flower answers, then that health is still green. Used by scripts/container_check.sh:
    API_KEY=... python3 scripts/container_smoke.py --url http://127.0.0.1:18000 --flower-url http://127.0.0.1:15555
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

KAGGLE_COLUMNS = ["id", "model_a", "model_b", "prompt", "response_a", "response_b"]
PROBABILITY_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]
FINAL_STATES = ("succeeded", "failed", "cancelled")


class SmokeError(RuntimeError):
    """A check of the smoke test failed; the message says which."""


def say(message: str) -> None:
    print(f"smoke: {message}", flush=True)


def request(
    url: str, *, api_key: str | None = None, data: bytes | None = None, content_type: str | None = None
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for any status, raises only when nothing answers."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def request_json(url: str, **kwargs) -> dict:
    status, body = request(url, **kwargs)
    if status >= 400:
        raise SmokeError(f"{url} answered {status}: {body[:500]!r}")
    return json.loads(body)


def test_rows(data: Path | None, *, rows: int) -> list[dict[str, str]]:
    """The first `rows` rows of `data` (labels and extra columns dropped), or built-in rows without a file."""
    if data is not None:
        with data.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return [{column: row[column] for column in KAGGLE_COLUMNS} for row in itertools.islice(reader, rows)]
    prompts = [
        ("What is the capital of France?", "Paris is the capital of France.", "I think it might be Lyon."),
        ("Name a prime number.", "7 is a prime number.", "Seven."),
        ("What is 2 + 2?", "5", "2 + 2 = 4."),
        ("Translate 'cat' to German.", "Katze.", "Hund."),
    ]
    return [
        {
            "id": str(5000 + index),
            "model_a": "",
            "model_b": "",
            "prompt": json.dumps([prompts[index % len(prompts)][0]]),
            "response_a": json.dumps([prompts[index % len(prompts)][1]]),
            "response_b": json.dumps([prompts[index % len(prompts)][2]]),
        }
        for index in range(rows)
    ]


def to_csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=KAGGLE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def wait_healthy(url: str, *, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status, body = request(f"{url}/readyz")
            if status == 200:
                return json.loads(body)
            last = body[:300]
        except OSError as error:
            last = str(error).encode()
        if time.monotonic() > deadline:
            raise SmokeError(f"/readyz not green after {timeout_s:.0f}s: {last!r}")
        time.sleep(2)


def check_submission(text: str, expected_ids: list[str]) -> None:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames != ["id", *PROBABILITY_COLUMNS]:
        raise SmokeError(f"submission.csv columns are {reader.fieldnames}, expected id + {PROBABILITY_COLUMNS}")
    rows = list(reader)
    ids = [row["id"] for row in rows]
    if ids != expected_ids:
        raise SmokeError(f"submission.csv ids {ids} differ from the uploaded ids {expected_ids}")
    for row in rows:
        probabilities = [float(row[column]) for column in PROBABILITY_COLUMNS]
        if not all(0 <= value <= 1 for value in probabilities) or not math.isclose(sum(probabilities), 1, abs_tol=1e-3):
            raise SmokeError(f"row {row['id']}: probabilities {probabilities} do not sum to 1")


def run(args: argparse.Namespace, api_key: str) -> dict[str, float]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    health = wait_healthy(args.url, timeout_s=args.ready_timeout)
    timings["ready_s"] = time.monotonic() - started
    say(f"readyz green after {timings['ready_s']:.1f}s; workers {health['workers']}")

    rows = test_rows(args.data, rows=args.rows)
    body, content_type = multipart("file", "smoke.csv", to_csv(rows))
    step = time.monotonic()
    dataset = request_json(f"{args.url}/v1/datasets", api_key=api_key, data=body, content_type=content_type)
    say(f"POST /v1/datasets: {json.dumps(dataset)}")
    job = request_json(
        f"{args.url}/v1/jobs/predict",
        api_key=api_key,
        data=json.dumps({"dataset": dataset["id"]}).encode(),
        content_type="application/json",
    )
    job_id = job["job_id"]
    say(f"POST /v1/jobs/predict: job {job_id}")
    deadline = time.monotonic() + args.job_timeout
    while (job := request_json(f"{args.url}/v1/jobs/{job_id}", api_key=api_key))["state"] not in FINAL_STATES:
        if time.monotonic() > deadline:
            raise SmokeError(f"job {job_id} still {job['state']} after {args.job_timeout:.0f}s")
        time.sleep(1)
    timings["predict_job_s"] = time.monotonic() - step
    if job["state"] != "succeeded":
        raise SmokeError(f"job {job_id} {job['state']}: {job.get('error')}")
    say(f"job {job_id} succeeded in {timings['predict_job_s']:.1f}s; job timings {job.get('timings')}")

    status, submission = request(f"{args.url}/v1/jobs/{job_id}/artifacts/submission.csv", api_key=api_key)
    if status != 200:
        raise SmokeError(f"GET submission.csv answered {status}: {submission[:300]!r}")
    check_submission(submission.decode(), [row["id"] for row in rows])
    say(f"submission.csv: {len(rows)} rows, ids in upload order, probabilities sum to 1")
    print("\n".join(submission.decode().splitlines()[:4]), flush=True)
    metrics = request_json(f"{args.url}/v1/jobs/{job_id}/artifacts/metrics.json", api_key=api_key)
    judges = {chunk["judge"].get("kind", "LLM judge") for chunk in metrics["chunks"]}
    if judges != {"text model"} or not all(chunk["calibrated"] for chunk in metrics["chunks"]):
        raise SmokeError(f"a plain predict job should use the calibrated default predictor; chunks used {judges}")
    say("the job used the default predictor (calibrated text model)")

    status, flower = request(f"{args.flower_url}/healthcheck")
    if status != 200:
        raise SmokeError(f"Flower {args.flower_url}/healthcheck answered {status}: {flower[:200]!r}")
    say(f"Flower answers: {flower.decode().strip()}")
    health = wait_healthy(args.url, timeout_s=10)
    say(f"readyz still green: {health['status']}, broker {health['broker']}")
    timings["total_s"] = time.monotonic() - started
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:18000", help="the gateway")
    parser.add_argument("--flower-url", default="http://127.0.0.1:15555")
    parser.add_argument("--data", type=Path, help="a Kaggle arena CSV (labels are dropped); default: built-in rows")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=1800,
        help="seconds for the first green /readyz (a first start fits the default predictor: minutes)",
    )
    parser.add_argument("--job-timeout", type=float, default=900)
    args = parser.parse_args()
    api_key = os.environ.get("API_KEY")
    if not api_key:
        say("set API_KEY to the key the gateway was started with")
        return 2
    try:
        timings = run(args, api_key)
    except (SmokeError, OSError) as error:
        say(f"FAILED: {error}")
        return 1
    say("PASSED " + " ".join(f"{name}={value:.1f}" for name, value in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
