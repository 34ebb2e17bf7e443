"""Upload bench: a real gateway (uvicorn, .venv-api) per case, one pathological or maximal upload each.

    .venv-api/bin/python scripts/bench/bench_upload.py [--max-upload-mib 200] [--cases maximal,wide,29mb,fullest]

Each case starts a fresh gateway (its own SHARED_DIR in a temporary folder, Redis db 14 under a unique
REDIS_KEY_PREFIX, deleted afterwards), warms it with one tiny valid upload (so lazy imports count in the
baseline), then sends one file and prints, per case: the answer's status and the first 160 characters of its
detail; the wall time of the upload request, and the gateway's CPU time for it (user + system: the figure that
other load on the machine does not move; the /healthz polls add a few ms); the gateway's RSS before it (VmRSS)
and its peak over its life (VmHWM); its most threads; and the slowest GET /healthz answered while the upload
was in flight (polled every 0.1 s from another thread: a held event loop shows there). One JSON object per
case, then a summary table.

Cases:
    maximal  MAX_UPLOAD_BYTES (less 64 KiB for the multipart envelope) of minimal rows (`17,[],[],[]`)
    wide     a 2.6 MB CSV: the four required columns and 300,000 more, one row
    29mb     29 MB of minimal rows
    fullest  MAX_UPLOAD_ROWS rows (default 1,000,000) padded to fill MAX_UPLOAD_BYTES: the largest upload that
             is accepted (skipped when --max-upload-mib is small enough that the rows would not fit)
"""

from __future__ import annotations

import argparse
import json
import os
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
import redis

ROOT = Path(__file__).resolve().parents[2]
API_PYTHON = ROOT / ".venv-api" / "bin" / "python"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
HEADER = b"id,prompt,response_a,response_b\n"
ENVELOPE_BYTES = 64 * 1024


def minimal_rows_file(path: Path, *, size: int) -> int:
    """Write `size` bytes (about) of the smallest valid rows; return the rows written."""
    rows = 0
    with open(path, "wb") as handle:
        handle.write(HEADER)
        written = len(HEADER)
        block_rows = 10_000
        while written < size:
            block = b"".join(b"%d,[],[],[]\n" % (rows + index) for index in range(block_rows))
            if written + len(block) > size:
                block = block[: block.rfind(b"\n", 0, size - written) + 1]
                if not block:
                    break
            handle.write(block)
            written += len(block)
            rows += block.count(b"\n")
    return rows


def wide_file(path: Path, *, extra_columns: int) -> None:
    names = [b"id", b"prompt", b"response_a", b"response_b", *(b"c%d" % index for index in range(extra_columns))]
    with open(path, "wb") as handle:
        handle.write(b",".join(names) + b"\n")
        handle.write(b"1,[],[],[]" + b"," * extra_columns + b"\n")


def fullest_file(path: Path, *, rows: int, size: int) -> int:
    """`rows` valid rows whose prompts are padded so the file is about `size` bytes; return the rows written."""
    id_bytes = len(str(rows)) + 1
    pad = max(0, (size - len(HEADER)) // rows - len(b",[],[],[]\n") - len(b'"[""""]"') - id_bytes)
    prompt = b'"[""' + b"x" * pad + b'""]"'
    with open(path, "wb") as handle:
        handle.write(HEADER)
        for start in range(0, rows, 10_000):
            handle.write(
                b"".join(b"%d,%s,[],[]\n" % (index, prompt) for index in range(start, min(rows, start + 10_000)))
            )
    return rows


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far: the gateway's own cost, whatever else loads the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) and Threads of `pid`."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


class Gateway:
    def __init__(self, workdir: Path, *, max_upload_bytes: int, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = "bench-" + uuid.uuid4().hex
        self.prefix = f"bench-upload-{uuid.uuid4().hex[:12]}:"
        env = {
            **os.environ,
            "API_KEY": self.api_key,
            "SHARED_DIR": str(workdir / "shared"),
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": self.prefix,
            "MAX_UPLOAD_BYTES": str(max_upload_bytes),
            **extra_env,
        }
        command = [str(API_PYTHON), "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        self.log = open(workdir / "api.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start; see {workdir / 'api.log'}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
            client.delete(key)


def upload(gateway: Gateway, path: Path) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with open(path, "rb") as handle:
        response = httpx.post(
            gateway.url + "/v1/datasets",
            files={"file": (path.name, handle, "text/csv")},
            headers={"X-API-Key": gateway.api_key},
            timeout=900,
        )
    return response, time.perf_counter() - started


def run_case(name: str, path: Path, *, workdir: Path, max_upload_bytes: int, extra_env: dict[str, str]) -> dict:
    gateway = Gateway(workdir, max_upload_bytes=max_upload_bytes, extra_env=extra_env)
    try:
        tiny = workdir / "tiny.csv"
        minimal_rows_file(tiny, size=200)
        warm, _ = upload(gateway, tiny)
        if warm.status_code != 201:
            raise RuntimeError(f"the warm-up upload got {warm.status_code}: {warm.text[:300]}")
        before = proc_status(gateway.process.pid)
        cpu_before = cpu_seconds(gateway.process.pid)
        stop = threading.Event()
        health_latencies: list[float] = []
        most_threads = [before["Threads"]]

        def probe() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        client.get(gateway.url + "/healthz")
                    except httpx.HTTPError:
                        pass
                    health_latencies.append(time.perf_counter() - started)
                    most_threads[0] = max(most_threads[0], proc_status(gateway.process.pid)["Threads"])
                    stop.wait(0.1)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        response, wall_s = upload(gateway, path)
        stop.set()
        prober.join()
        after = proc_status(gateway.process.pid)
        cpu_s = cpu_seconds(gateway.process.pid) - cpu_before
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text
        return {
            "case": name,
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "status": response.status_code,
            "detail": str(detail)[:160] if response.status_code != 201 else f"rows={response.json()['rows']}",
            "detail_chars": len(str(detail)),
            "wall_s": round(wall_s, 2),
            "gateway_cpu_s": round(cpu_s, 2),
            "rss_before_mib": round(before["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
            "most_threads": most_threads[0],
            "healthz_max_ms": round(max(health_latencies, default=0) * 1000, 1),
        }
    finally:
        gateway.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-upload-mib", type=int, default=200, help="MAX_UPLOAD_BYTES of the gateway, in MiB")
    parser.add_argument("--max-rows", type=int, default=1_000_000, help="rows of the `fullest` case")
    parser.add_argument("--cases", default="maximal,wide,29mb,fullest")
    parser.add_argument(
        "--env", action="append", default=[], help="extra NAME=VALUE for the gateway (e.g. MAX_UPLOAD_ROWS=1000)"
    )
    args = parser.parse_args()
    max_upload_bytes = args.max_upload_mib * 1024 * 1024
    extra_env = dict(item.split("=", 1) for item in args.env)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        tmp_path = Path(tmp)
        for name in args.cases.split(","):
            path = tmp_path / f"{name}.csv"
            if name == "maximal":
                minimal_rows_file(path, size=max_upload_bytes - ENVELOPE_BYTES)
            elif name == "wide":
                wide_file(path, extra_columns=300_000)
            elif name == "29mb":
                minimal_rows_file(path, size=29 * 1000 * 1000)
            elif name == "fullest":
                if (max_upload_bytes - ENVELOPE_BYTES) // args.max_rows < 40:
                    print(json.dumps({"case": name, "skipped": "MAX_UPLOAD_BYTES too small for the rows"}))
                    continue
                fullest_file(path, rows=args.max_rows, size=max_upload_bytes - ENVELOPE_BYTES)
            else:
                parser.error(f"unknown case {name!r}")
            workdir = tmp_path / f"gateway-{name}"
            workdir.mkdir()
            result = run_case(name, path, workdir=workdir, max_upload_bytes=max_upload_bytes, extra_env=extra_env)
            path.unlink()
            results.append(result)
            print(json.dumps(result), flush=True)
    columns = f"{'case':<9} {'MB':>6} {'status':>6} {'wall s':>7} {'cpu s':>6} {'RSS MiB':>8} {'peak MiB':>9}"
    print(f"\n{columns} {'threads':>7} {'healthz ms':>10}")
    for result in results:
        print(
            f"{result['case']:<9} {result['file_mb']:>6} {result['status']:>6} {result['wall_s']:>7}"
            f" {result['gateway_cpu_s']:>6}"
            f" {result['rss_before_mib']:>8} {result['peak_rss_mib']:>9} {result['most_threads']:>7}"
            f" {result['healthz_max_ms']:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
