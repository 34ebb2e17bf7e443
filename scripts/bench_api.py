"""Load check of a running stack (`scripts/stack.sh up`): concurrent status polls, concurrent /v1/score calls,
and the worker's memory over consecutive predict jobs. Prints one JSON object.

    API_KEY=$(cat var/run/api_key) .venv-api/bin/python scripts/bench_api.py [--url http://127.0.0.1:8000]

Figures: latency percentiles (ms) and error counts per phase; 5xx and transport errors are counted apart.
The worker's RSS (its process and children, e.g. vLLM's engine) is read from /proc through the pid file that
stack.sh wrote, after one warm-up job and after `--jobs` more small predict jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France.", "I think it might be Lyon."),
    ("Name a prime number.", "7 is a prime number.", "Seven."),
]


def small_dataset(rows: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "prompt", "response_a", "response_b"])
    for index in range(rows):
        prompt, response_a, response_b = PAIRS[index % len(PAIRS)]
        writer.writerow([index, json.dumps([prompt]), json.dumps([response_a]), json.dumps([response_b])])
    return buffer.getvalue().encode()


def percentiles(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {}
    ordered = sorted(latency * 1000 for latency in latencies_s)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)

    return {"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 1),
            "mean_ms": round(statistics.fmean(ordered), 1)}  # fmt: skip


async def burst(client: httpx.AsyncClient, count: int, request) -> dict:
    """`count` requests at once; latency percentiles and how many failed, by kind."""

    async def one(index: int):
        started = time.perf_counter()
        try:
            response = await request(client, index)
        except httpx.HTTPError as exc:
            return time.perf_counter() - started, type(exc).__name__
        return time.perf_counter() - started, response.status_code

    started = time.perf_counter()
    results = await asyncio.gather(*(one(index) for index in range(count)))
    codes: dict[str, int] = {}
    for _, code in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {
        "requests": count,
        "wall_s": round(time.perf_counter() - started, 2),
        "status_codes": codes,
        "errors_5xx": sum(1 for _, code in results if isinstance(code, int) and code >= 500),
        "errors_transport": sum(1 for _, code in results if not isinstance(code, int)),
        **percentiles([latency for latency, code in results if code == 200]),
    }


def tree_rss_mib(pid: int) -> float:
    """RSS of `pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total_kib, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        todo.extend(children.get(current, []))
    return round(total_kib / 1024, 1)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish within {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("ARENA_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("RUN_DIR", ROOT / "var" / "run")))
    parser.add_argument("--polls", type=int, default=200, help="concurrent GET /v1/jobs/{id}")
    parser.add_argument("--scores", type=int, default=20, help="concurrent POST /v1/score (one pair each)")
    parser.add_argument("--jobs", type=int, default=20, help="consecutive small predict jobs for the RSS check")
    parser.add_argument("--rows", type=int, default=2, help="rows per predict job")
    parser.add_argument("--timeout", type=float, default=600, help="client timeout per request, seconds")
    args = parser.parse_args()

    api_key = os.environ.get("API_KEY") or (args.run_dir / "api_key").read_text().strip()
    headers = {"Authorization": f"Bearer {api_key}"}
    report: dict = {"url": args.url}
    with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
        report["health"] = client.get("/healthz").json()
        dataset = client.post("/v1/datasets", files={"file": ("bench.csv", small_dataset(args.rows), "text/csv")})
        dataset_id = dataset.raise_for_status().json()["id"]

        def predict() -> dict:
            response = client.post("/v1/jobs/predict", json={"dataset": dataset_id})
            return wait_job(client, response.raise_for_status().json()["job_id"])

        warm = predict()  # loads the judge on the worker
        report["warm_up_job"] = {"state": warm["state"], "seconds": warm["timings"]["total_seconds"]}
        job_id = warm["id"]

        async def phases() -> None:
            limits = httpx.Limits(max_connections=args.polls, max_keepalive_connections=args.polls)
            async with httpx.AsyncClient(
                base_url=args.url, headers=headers, timeout=args.timeout, limits=limits
            ) as aclient:
                report["polls"] = await burst(aclient, args.polls, lambda c, _i: c.get(f"/v1/jobs/{job_id}"))
                pair = {"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}
                report["scores"] = await burst(
                    aclient, args.scores, lambda c, i: c.post("/v1/score", json={"pairs": [{**pair, "id": str(i)}]})
                )

        asyncio.run(phases())
        print(json.dumps({"polls": report["polls"], "scores": report["scores"]}), file=sys.stderr, flush=True)

        pid_files = sorted(args.run_dir.glob("worker-*.pid"))
        worker_pid = int(pid_files[0].read_text()) if pid_files else None
        rss_before = tree_rss_mib(worker_pid) if worker_pid else None
        states: dict[str, int] = {}
        started = time.perf_counter()
        for index in range(args.jobs):
            state = predict()["state"]
            states[state] = states.get(state, 0) + 1
            print(f"bench: job {index + 1}/{args.jobs} {state}", file=sys.stderr, flush=True)
        report["consecutive_jobs"] = {
            "jobs": args.jobs,
            "rows_each": args.rows,
            "states": states,
            "seconds_per_job": round((time.perf_counter() - started) / max(args.jobs, 1), 2),
            "worker_rss_mib_before": rss_before,
            "worker_rss_mib_after": tree_rss_mib(worker_pid) if worker_pid else None,
            "worker_pid_file": pid_files[0].name if pid_files else "none found (pass --run-dir)",
        }
    print(json.dumps(report, indent=1))
    failed = report["polls"]["errors_5xx"] + report["scores"]["errors_5xx"]
    return 1 if failed or states.get("succeeded", 0) != args.jobs else 0


if __name__ == "__main__":
    sys.exit(main())
