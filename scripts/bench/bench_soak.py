"""Soak benchmark: many small predict jobs while workers are killed (-9) and Redis is restarted at random moments.

It starts its own stack in a temporary folder (nothing of `make up` is touched): a redis-server with append-only
persistence on a free port, `--workers` CPU workers (.venv-worker) and the gateway (.venv-api, uvicorn), on a
temporary SHARED_DIR holding the embedded models and the default predictor. Jobs are plain predict requests (the
default predictor), each with its own Idempotency-Key, retried with that key while the gateway answers 503.

    .venv-api/bin/python scripts/bench/bench_soak.py [--jobs 50] [--workers 2] [--kills 4] [--redis-restarts 2]
    .venv-api/bin/python scripts/bench/bench_soak.py --flood   # two tenants: a quiet one beside one that floods

With `--flood`, two tenants share the stack (API_KEYS_FILE): the quiet one submits `--jobs` jobs as above, while the
other keeps as many jobs queued as MAX_ACTIVE_JOBS_PER_TENANT lets it (a 429 waits its Retry-After, at most 5 s);
the report gives the quiet tenant's job latency (p50, p99) and the flood's counts. Run it once without `--flood`
for the quiet tenant's latency alone.

Prints one JSON object: submitted / succeeded / failed (with reasons) / stuck / duplicated / lost, and the
longest wait (submission to a finished record). Target: 0 stuck, 0 duplicated, 0 lost.
- stuck: not finished when the run ends (`--finish-timeout` after the last submission);
- duplicated: a job whose submission has a row more than once, or that was assembled from a chunk twice, or two
  job ids for one Idempotency-Key;
- lost: a job the gateway accepted (202) that has no record, or a succeeded job without its submission.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.settings import DEFAULT_MODEL_NAME, DEFAULT_TEXT_ENCODER_NAME  # noqa: E402

WORKER_PYTHON = ROOT / ".venv-worker" / "bin" / "python"
API_PYTHON = ROOT / ".venv-api" / "bin" / "python"
MODELS = ROOT / "var" / "shared" / "models"
FINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def small_dataset(rows: int, seed: int) -> bytes:
    """`rows` pairs of real-looking text with distinct ids (a job's rows must come back exactly once)."""
    rng = random.Random(seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "prompt", "response_a", "response_b"])
    for index in range(rows):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        prompt = f"What is {a} + {b}? Explain briefly."
        good = f"{a} + {b} = {a + b}. Adding the tens and then the ones gives {a + b}."
        bad = f"I think it is {a + b + rng.randint(1, 9)}."
        first, second = (good, bad) if rng.random() < 0.5 else (bad, good)
        writer.writerow([index, json.dumps([prompt]), json.dumps([first]), json.dumps([second])])
    return buffer.getvalue().encode()


class SoakStack:
    def __init__(self, root: Path, *, workers: int) -> None:
        self.root = root
        self.shared = root / "shared"
        (self.shared / "models").mkdir(parents=True)
        for name in (DEFAULT_MODEL_NAME, DEFAULT_TEXT_ENCODER_NAME):
            (self.shared / "models" / name).symlink_to(MODELS / name)
        shutil.copytree(MODELS / "default", self.shared / "models" / "default")
        self.redis_port, self.api_port = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.api_key = uuid.uuid4().hex
        self.tenant_keys = {"quiet": uuid.uuid4().hex, "flood": uuid.uuid4().hex}
        (root / "api_keys").write_text("".join(f"{name} {key}\n" for name, key in self.tenant_keys.items()))
        self.redis: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.api: subprocess.Popen | None = None
        self.n_workers = workers
        self.lock = threading.Lock()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT), SHARED_DIR=str(self.shared), REDIS_URL=self.redis_url, API_KEY=self.api_key,
            OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", WORKER_HEARTBEAT_S="2", SWEEP_INTERVAL_S="2",
            DISPATCH_GRACE_S="5", CHUNK_RETRY_DELAY_S="1", INSPECT_TIMEOUT_S="0.5", PREDICT_CHUNK_ROWS="50",
            API_KEYS_FILE=str(self.root / "api_keys"),
        )  # fmt: skip
        return env

    def start_redis(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(self.root),
                   "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        with open(self.root / "redis.log", "ab") as log:
            self.redis = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"], capture_output=True).stdout.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start; see {self.root / 'redis.log'}")

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=30)

    def start_worker(self) -> str:
        name = f"soak-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        env = self.env()
        env.pop("API_KEY")  # workers never need it
        command = [str(WORKER_PYTHON), "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "cpu",
                   "-n", name, "--pool=solo", "--concurrency=1", "--loglevel=INFO", "--without-mingle",
                   "--without-gossip"]  # fmt: skip
        with open(self.root / f"worker-{name.split('@')[0]}.log", "wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        with self.lock:
            self.workers[name] = process
        return name

    def busy_workers(self) -> set[str]:
        """Workers that a job record shows judging a chunk right now (from SHARED_DIR/jobs/, as the sweeper reads)."""
        busy = set()
        for path in (self.shared / "jobs").glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            busy |= {chunk["worker"] for chunk in record.get("chunks", []) if chunk.get("state") == "running"}
        return busy

    def kill_worker(self, rng: random.Random, *, wait_for_busy_s: float = 15.0) -> tuple[str | None, bool]:
        """Kill -9 a worker, preferring one in the middle of a chunk (waiting a little for one); returns it and
        whether it was busy."""
        until = time.monotonic() + wait_for_busy_s
        while True:
            with self.lock:
                alive = [name for name, process in self.workers.items() if process.poll() is None]
                busy = [name for name in alive if name in self.busy_workers()]
                if busy or time.monotonic() > until:
                    if not alive:
                        return None, False
                    victim = rng.choice(busy or alive)
                    os.killpg(self.workers[victim].pid, signal.SIGKILL)
                    break
            time.sleep(0.2)
        self.workers[victim].wait()
        return victim, bool(busy)

    def start_api(self) -> None:
        command = [str(API_PYTHON), "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
                   "--port", str(self.api_port), "--log-level", "warning"]  # fmt: skip
        with open(self.root / "api.log", "wb") as log:
            self.api = subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        for process in [*self.workers.values(), self.api]:
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    process.terminate()
        for process in [*self.workers.values(), self.api]:
            if process is not None:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.stop_redis()


def request_with_retries(client: httpx.Client, method: str, url: str, *, deadline: float, **kwargs) -> httpx.Response:
    """Retry transport errors and 503 (Redis restarting) until `deadline`; other answers are returned."""
    while True:
        try:
            response = client.request(method, url, **kwargs)
            if response.status_code != 503:
                return response
        except httpx.HTTPError:
            response = None
        if time.monotonic() > deadline:
            if response is None:
                raise RuntimeError(f"{method} {url}: no answer before the deadline")
            return response
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rows", type=int, default=300, help="rows per job's dataset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=4, help="workers killed with -9 (each replaced)")
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--submit-every", type=float, default=1.0, help="seconds between submissions")
    parser.add_argument("--finish-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, records)")
    parser.add_argument("--flood", action="store_true", help="a second tenant floods the stack meanwhile")
    args = parser.parse_args()
    for path in (WORKER_PYTHON, API_PYTHON, MODELS / "default" / "text_model.json"):
        if not path.exists():
            print(f"bench_soak: {path} is missing; run `make setup`", file=sys.stderr)
            return 2
    if shutil.which("redis-server") is None:
        print("bench_soak: needs redis-server (apt-get install -y redis-server)", file=sys.stderr)
        return 2

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="arena-soak-"))
    stack = SoakStack(root, workers=args.workers)
    events: list[str] = []
    try:
        stack.start_redis()
        for _ in range(args.workers):
            stack.start_worker()
        stack.start_api()
        base = f"http://127.0.0.1:{stack.api_port}"
        client = httpx.Client(base_url=base, headers={"X-API-Key": stack.tenant_keys["quiet"]}, timeout=30)
        started = time.monotonic()
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 300:
                raise RuntimeError(f"the stack did not become healthy; see {root}")
            time.sleep(1)
        events.append(f"healthy after {time.monotonic() - started:.0f}s")

        # Faults at random moments of the submission window (and a little after it).
        window = args.jobs * args.submit_every + 30
        faults = [("kill", rng.uniform(5, window)) for _ in range(args.kills)]
        faults += [("redis", rng.uniform(5, window)) for _ in range(args.redis_restarts)]
        faults.sort(key=lambda fault: fault[1])
        t0 = time.monotonic()

        def chaos() -> None:
            for kind, at in faults:
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                if kind == "kill":
                    victim, busy = stack.kill_worker(rng)
                    stack.start_worker()
                    what = "mid-chunk" if busy else "idle"
                    events.append(f"{time.monotonic() - t0:.0f}s: killed {victim} ({what}), started a replacement")
                else:
                    stack.stop_redis()
                    time.sleep(rng.uniform(1, 5))
                    stack.start_redis()
                    events.append(f"{time.monotonic() - t0:.0f}s: restarted Redis")

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()

        submitted: dict[str, dict] = {}  # idempotency key → {"job_ids": {...}, "submitted_at": ...}
        flooded: dict[str, dict] = {}
        flood_counts = {"accepted": 0, "refused_429": 0}
        quiet_refused = [0]  # 429s the quiet tenant waited out
        quiet_done = threading.Event()

        def flood() -> None:
            flooder = httpx.Client(base_url=base, headers={"X-API-Key": stack.tenant_keys["flood"]}, timeout=30)
            upload = request_with_retries(flooder, "POST", "/v1/datasets", deadline=time.monotonic() + 120,
                                          files={"file": ("flood.csv", small_dataset(args.rows, 10_000))})  # fmt: skip
            while not quiet_done.is_set():
                key = uuid.uuid4().hex
                response = request_with_retries(flooder, "POST", "/v1/jobs/predict", deadline=time.monotonic() + 60,
                                                json={"dataset": upload.json()["id"]},
                                                headers={"Idempotency-Key": key})  # fmt: skip
                if response.status_code == 429:
                    flood_counts["refused_429"] += 1
                    quiet_done.wait(min(5.0, float(response.headers.get("Retry-After", "1"))))
                elif response.status_code in (200, 202):
                    flood_counts["accepted"] += 1
                    flooded[key] = {"job_ids": {response.json()["job_id"]}, "submitted_at": time.time()}

        flood_thread = threading.Thread(target=flood, daemon=True)
        if args.flood:
            flood_thread.start()
        for index in range(args.jobs):
            deadline = time.monotonic() + 120
            files = {"file": (f"soak-{index}.csv", small_dataset(args.rows, index))}
            upload = request_with_retries(client, "POST", "/v1/datasets", deadline=deadline, files=files)
            if upload.status_code != 201:
                events.append(f"upload {index} refused: {upload.status_code} {upload.text[:200]}")
                continue
            key = uuid.uuid4().hex
            entry = submitted.setdefault(key, {"job_ids": set(), "submitted_at": time.time()})
            # Submitted twice with its key (a client retrying after a timeout): must stay one job.
            for _ in range(2):
                while True:  # a client that honours the per-tenant cap: waits its Retry-After (at most 5 s) and retries
                    response = request_with_retries(client, "POST", "/v1/jobs/predict", deadline=deadline,
                                                    json={"dataset": upload.json()["id"]},
                                                    headers={"Idempotency-Key": key})  # fmt: skip
                    if response.status_code != 429 or time.monotonic() > deadline:
                        break
                    quiet_refused[0] += 1
                    time.sleep(min(5.0, float(response.headers.get("Retry-After", "1"))))
                if response.status_code in (200, 202):
                    entry["job_ids"].add(response.json()["job_id"])
                else:
                    events.append(f"job {index} refused: {response.status_code} {response.text[:200]}")
            time.sleep(args.submit_every)
        chaos_thread.join()
        quiet_done.set()
        if args.flood:
            flood_thread.join()

        finish_by = time.monotonic() + args.finish_timeout
        records: dict[str, dict] = {}
        while time.monotonic() < finish_by:
            pending = [job_id for entry in [*submitted.values(), *flooded.values()] for job_id in entry["job_ids"]
                       if records.get(job_id, {}).get("state") not in FINAL]  # fmt: skip
            if not pending:
                break
            admin = httpx.Client(base_url=base, headers={"X-API-Key": stack.api_key}, timeout=30)
            for job_id in pending:
                response = request_with_retries(admin, "GET", f"/v1/jobs/{job_id}", deadline=finish_by)
                records[job_id] = response.json() if response.status_code == 200 else {"state": "lost"}
            time.sleep(2)

        report = {"submitted": 0, "succeeded": 0, "failed": 0, "stuck": 0, "duplicated": 0, "lost": 0,
                  "failed_reasons": [], "longest_wait_s": 0.0}  # fmt: skip
        latencies = []
        for entry in submitted.values():
            if not entry["job_ids"]:
                continue
            report["submitted"] += 1
            if len(entry["job_ids"]) > 1:
                report["duplicated"] += 1
                continue
            [job_id] = entry["job_ids"]
            job = records.get(job_id, {"state": "lost"})
            state = job["state"]
            if state == "succeeded":
                csv_response = request_with_retries(client, "GET", f"/v1/jobs/{job_id}/artifacts/submission.csv",
                                                    deadline=time.monotonic() + 60)  # fmt: skip
                metrics = job.get("result", {})
                if csv_response.status_code != 200:
                    report["lost"] += 1
                    continue
                ids = [line.split(",")[0] for line in csv_response.text.splitlines()[1:]]
                chunks = [summary.get("chunk") for summary in metrics.get("chunks", [])]
                if sorted(ids, key=int) != [str(row) for row in range(args.rows)] or len(chunks) != len(set(chunks)):
                    report["duplicated"] += 1
                    continue
                report["succeeded"] += 1
                report["longest_wait_s"] = max(report["longest_wait_s"], job["timings"]["total_seconds"] or 0.0)
                latencies.append(job["timings"]["total_seconds"] or 0.0)
            elif state in ("failed", "cancelled"):
                report["failed"] += 1
                report["failed_reasons"].append(job.get("error"))
            elif state == "lost":
                report["lost"] += 1
            else:
                report["stuck"] += 1
        report["longest_wait_s"] = round(report["longest_wait_s"], 1)
        if latencies:
            ordered = sorted(latencies)
            report["quiet_latency_p50_s"] = round(ordered[len(ordered) // 2], 1)
            report["quiet_latency_p99_s"] = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)
        if args.flood:
            flood_states = [records.get(job_id, {"state": "lost"})["state"] for entry in flooded.values()
                            for job_id in entry["job_ids"]]  # fmt: skip
            report["flood"] = (
                flood_counts
                | {state: flood_states.count(state) for state in ("succeeded", "failed", "cancelled", "lost")}
                | {"stuck": sum(state not in (*FINAL, "lost") for state in flood_states)}
            )
            # Each tenant sees its own work only.
            seen_by_quiet = {job["id"] for job in client.get("/v1/jobs", params={"limit": 500}).json()}
            report["flood_jobs_seen_by_quiet"] = len(
                seen_by_quiet & {j for e in flooded.values() for j in e["job_ids"]}
            )
        report["quiet_refused_429"] = quiet_refused[0]
        report["events"] = events
        report["requeued_chunks"] = sum(
            1 for job in records.values() for chunk in job.get("chunks", []) if chunk.get("attempts", 0) > 1
        )
        print(json.dumps(report, indent=1))
        healthy = report["stuck"] == report["duplicated"] == report["lost"] == 0
        if args.flood:
            flood_report = report["flood"]
            healthy = (
                healthy and flood_report["lost"] == flood_report["stuck"] == report["flood_jobs_seen_by_quiet"] == 0
            )
        return 0 if healthy else 1
    finally:
        stack.stop()
        if args.keep:
            print(f"bench_soak: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
