"""Benchmark scale-out: one predict job on 1, 2 and 3 workers, started the way a user does (`STACK_WORKERS="cpu cpu"
scripts/stack.sh up`), each run a fresh stack on its own Redis key prefix and SHARED_DIR.

For each worker count it prints the job's wall time (first chunk started → last chunk finished), rows/s, and per
worker the chunks and rows it took, its seconds judging and its idle seconds within the job. The default predictor
judges, with the embedding cache off, so every run embeds every text. Prints one JSON object.

    PYTHONPATH=. .venv-api/bin/python scripts/bench/bench_scale.py [--rows 3667] [--workers 1 2 3] [--chunk-rows 128]

Figures worth keeping come from a machine running nothing else (flock /tmp/arena-cpu.lock on a shared one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "preference_pairs.csv"
MODELS = ROOT / "var" / "shared" / "models"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sample_csv(source: Path, rows: int, target: Path) -> int:
    import pandas as pd

    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame = frame.head(rows)
    frame.to_csv(target, index=False)
    return len(frame)


def shared_dir_with_models(root: Path) -> Path:
    """A fresh SHARED_DIR holding the encoder (linked) and the default predictor (copied: links out are refused)."""
    shared = root / "shared"
    (shared / "models").mkdir(parents=True)
    (shared / "models" / "all-MiniLM-L6-v2").symlink_to(MODELS / "all-MiniLM-L6-v2")
    shutil.copytree(MODELS / "default", shared / "models" / "default")
    return shared


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_stack(*, workers: int, csv_path: Path, chunk_rows: int, root: Path, timeout_s: float) -> dict:
    run_dir = root / f"run-{workers}"
    port = free_port()
    env = {
        **os.environ,
        "RUN_DIR": str(run_dir), "SHARED_DIR": str(shared_dir_with_models(run_dir)),
        "REDIS_KEY_PREFIX": f"bench-scale-{uuid.uuid4().hex[:8]}:", "API_KEY": secrets.token_urlsafe(24),
        "API_PORT": str(port), "API_INTERNAL_PORT": str(free_port()), "FLOWER_PORT": str(free_port()),
        "STACK_NO_PROXY": "1", "STACK_WORKERS": " ".join(["cpu"] * workers), "PREDICT_CHUNK_ROWS": str(chunk_rows),
        "EMBEDDING_CACHE_MAX_MB": "0",
    }  # fmt: skip
    stack = [str(ROOT / "scripts" / "stack.sh")]
    subprocess.run([*stack, "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {env['API_KEY']}"}, timeout=60
        )
        deadline = time.monotonic() + 300
        while client.get("/readyz").json().get("workers", {}).get("cpu", 0) < workers:  # every worker up
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} workers did not all come up; see {run_dir}")
            time.sleep(1)
        with csv_path.open("rb") as handle:
            dataset = client.post("/v1/datasets", files={"file": (csv_path.name, handle, "text/csv")}).json()
        job_id = client.post("/v1/jobs/predict", json={"dataset": dataset["id"]}).json()["job_id"]
        deadline = time.monotonic() + timeout_s
        while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not finish within {timeout_s}s")
            time.sleep(1)
        if job["state"] != "succeeded":
            raise SystemExit(f"job {job_id} {job['state']}: {job.get('error')}")
    finally:
        subprocess.run([*stack, "down"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = job["chunks"]
    began = min(chunk["started_at"] for chunk in chunks)
    ended = max(chunk["finished_at"] for chunk in chunks)
    wall = seconds(began, ended)
    # Each worker's share as the job reports it (workers/jobs/predict.py worker_shares), idle = wall - busy.
    per_worker = {
        worker: {"chunks": share["chunks"], "rows": share["rows"], "busy_s": round(share["seconds"], 1),
                 "idle_s": round(wall - share["seconds"], 1)}
        for worker, share in job["result"]["workers"].items()
    }  # fmt: skip
    rows = job["progress"]["total"]
    return {
        "workers": workers, "rows": rows, "chunks": len(chunks), "wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall, 1), "log_loss": job["result"].get("log_loss"),
        "per_worker": dict(sorted(per_worker.items())),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=3667)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--chunk-rows", type=int, default=128)
    parser.add_argument("--timeout-s", type=float, default=1800)
    args = parser.parse_args()
    if not (MODELS / "default" / "text_model.json").is_file():
        sys.exit(f"no default predictor at {MODELS / 'default'}: run `make setup` first")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        csv_path = root / "pairs.csv"
        rows = sample_csv(args.data, args.rows, csv_path)
        runs = [
            run_stack(workers=count, csv_path=csv_path, chunk_rows=args.chunk_rows, root=root, timeout_s=args.timeout_s)
            for count in args.workers
        ]
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "rows": rows, "chunk_rows": args.chunk_rows, "runs": runs,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
