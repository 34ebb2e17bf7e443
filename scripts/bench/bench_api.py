"""Load-and-abuse benchmark of the gateway: a concurrency sweep per route, /healthz while score requests pile
up, slow clients on raw sockets, the gateway's peak RSS, and (with a real worker) its memory over predict jobs.

    # its own gateway (a real uvicorn on a free port, temp SHARED_DIR, Redis db 14, a unique key prefix):
    PYTHONPATH=. .venv-api/bin/python scripts/bench/bench_api.py
    # a running stack (scripts/stack.sh up, or compose behind its proxy):
    API_KEY=$(cat var/run/api_key) .venv-api/bin/python scripts/bench/bench_api.py --base-url http://127.0.0.1:8000

Its own gateway gets one of three workers (`--worker`): `phantom` (default) announces a busy worker on the cpu
queue in Redis and never consumes it, so every score request waits as it would behind a worker busy with a
long job; `real` starts one Celery worker of .venv-worker (the CPU twin of a GPU worker); `none` starts none.
`--proxy` puts nginx in front, with the project's config (compose/nginx.conf.template) when there is one.

Every loop is bounded in count and time (`--level-cap`, `--time-cap`); all traffic goes to 127.0.0.1. Prints
markdown tables (and `--json PATH` writes every figure). Latency percentiles cover every answered request,
whatever its status: a 429 answered at once is a fast answer. "cut" counts requests still unanswered when a
level's time cap was reached; "conn err" counts transport errors (refused, reset, client timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # shared/ (settings, worker presence) for the stack this script starts

from shared.process_tree import descendants  # noqa: E402  (the path above first)

API_PYTHON = ROOT / ".venv-api" / "bin" / "python"
WORKER_PYTHON = ROOT / ".venv-worker" / "bin" / "python"
MODELS = ROOT / "var" / "shared" / "models"
PROXY_TEMPLATE = ROOT / "compose" / "nginx.conf.template"
PROXY_RENDER = ROOT / "compose" / "proxy-conf.sh"
PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France.", "I think it might be Lyon."),
    ("Name a prime number.", "7 is a prime number.", "Seven."),
]
SCORE_BODY = {"pairs": [{"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}]}
DIRECT, PROXY = "direct (uvicorn)", "proxy"
ROUTES = ("GET /healthz", "GET /v1/jobs", "GET /v1/datasets", "POST /v1/datasets", "POST /v1/score")


def small_dataset(rows: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "prompt", "response_a", "response_b"])
    for index in range(rows):
        prompt, response_a, response_b = PAIRS[index % len(PAIRS)]
        writer.writerow([index, json.dumps([prompt]), json.dumps([response_a]), json.dumps([response_b])])
    return buffer.getvalue().encode()


def minimal_rows_csv(size_bytes: int) -> bytes:
    """A valid arena CSV of about `size_bytes`, made of the smallest rows: the costliest shape per byte."""
    header = b"id,prompt,response_a,response_b\n"
    row = b'%d,"[""a""]","[""b""]","[""c""]"\n'
    lines, total, index = [header], len(header), 0
    while total < size_bytes:
        line = row % index
        lines.append(line)
        total += len(line)
        index += 1
    return b"".join(lines)


def percentiles(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {}
    ordered = sorted(latency * 1000 for latency in latencies_s)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


def parse_levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1 or max(levels) > 1000:
        raise argparse.ArgumentTypeError("levels are comma-separated integers from 1 to 1000, e.g. 1,10,50,200")
    return levels


# --- /proc ---------------------------------------------------------------------------------------------------


def memory_mib(pid: int | None) -> dict:
    """VmRSS and VmHWM (the peak RSS since the process started) of `pid`, in MiB; {} when unreadable."""
    if pid is None:
        return {}
    try:
        status = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return {}
    fields = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return {"rss_mib": round(fields.get("VmRSS", 0) / 1024, 1), "peak_rss_mib": round(fields.get("VmHWM", 0) / 1024, 1)}


def tree_rss_mib(pid: int) -> float:
    """RSS of `pid` and all its descendants, from /proc."""
    total_kib = 0
    for current in [pid, *descendants(pid)]:
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total_kib / 1024, 1)


def listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1/0.0.0.0:`port` (from /proc/net/tcp and the fd tables), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{parts[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the stack this script starts ------------------------------------------------------------------------------


@dataclass
class OwnStack:
    """A gateway (real uvicorn) on a free port, a worker (phantom, real or none) and optionally nginx in front."""

    worker: str
    score_timeout_s: float
    redis_url: str
    proxy: bool
    gateway_env: dict[str, str] = field(default_factory=dict)
    uvicorn_args: list[str] = field(default_factory=list)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="arena-bench-")))
    prefix: str = field(default_factory=lambda: f"arena-bench-{uuid.uuid4().hex[:12]}:")
    api_key: str = field(default_factory=lambda: "bench-" + uuid.uuid4().hex)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _stop_announcing: threading.Event = field(default_factory=threading.Event)
    _announced: threading.Event = field(default_factory=threading.Event)

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT),
            SHARED_DIR=str(self.shared_dir),
            API_KEY=self.api_key,
            REDIS_URL=self.redis_url,
            REDIS_KEY_PREFIX=self.prefix,
            SCORE_TIMEOUT_S=str(self.score_timeout_s),
        )
        return env

    def start(self) -> None:
        from shared.artifacts import MODELS_DIR_NAME
        from shared.settings import DEFAULT_MODEL_NAME, DEFAULT_TEXT_ENCODER_NAME

        models = self.shared_dir / MODELS_DIR_NAME
        models.mkdir(parents=True)
        if self.worker == "real":
            for name in (DEFAULT_MODEL_NAME, DEFAULT_TEXT_ENCODER_NAME):
                (models / name).symlink_to(MODELS / name)
            shutil.copytree(MODELS / "default", models / "default")  # links out of models/ are refused
        else:  # the gateway only checks that these look like a model and a predictor; nothing loads them
            (models / DEFAULT_MODEL_NAME).mkdir()
            (models / DEFAULT_MODEL_NAME / "config.json").write_text("{}")
            (models / "default").mkdir()
            (models / "default" / "text_model.json").write_text("{}")
        if self.worker == "phantom":  # announced before the gateway starts: its first view of the workers has it
            threading.Thread(target=self._announce_phantom, daemon=True).start()
            self._announced.wait(10)
        self.api_port = free_port()
        self.direct_url = f"http://127.0.0.1:{self.api_port}"
        self._start_gateway()
        if self.worker == "real":
            self._start_worker()
        self.base_url = self.direct_url
        if self.proxy:
            self._start_proxy()

    def _start_gateway(self) -> None:
        command = [str(API_PYTHON), "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
                   "--port", str(self.api_port), "--log-level", "warning", *self.uvicorn_args]  # fmt: skip
        self._spawn("gateway", command, {**self.env(), **self.gateway_env})
        self._wait_listening(self.api_port, "gateway")

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.root / f"{name}.log", "ab") as log_file:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        return process

    def _wait_listening(self, port: int, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}:\n{self.log_tail(name)}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s:\n{self.log_tail(name)}")

    def _settings(self):
        from shared.settings import Settings

        return Settings(
            SHARED_DIR=self.shared_dir, REDIS_URL=self.redis_url, REDIS_KEY_PREFIX=self.prefix, _env_file=None
        )

    def _announce_phantom(self) -> None:
        """Say 'a busy worker consumes cpu' every 2 s: the gateway routes score tasks there; nothing takes them."""
        from shared.worker_presence import announce, redis_client

        settings = self._settings()
        client = redis_client(settings)
        while not self._stop_announcing.is_set():
            with contextlib.suppress(Exception):
                announce(client, settings, f"phantom@{socket.gethostname()}", ["cpu"], idle_since=None)
                self._announced.set()
            self._stop_announcing.wait(2)

    def _start_worker(self, timeout: float = 240) -> None:
        from shared.worker_presence import live_workers, redis_client

        env = {
            **self.env(),
            "JUDGE_ENGINE": "transformers",
            "MAX_MODEL_LEN": "1024",
            "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "WORKER_HEARTBEAT_S": "2",
        }
        env.pop("API_KEY")
        command = [str(WORKER_PYTHON), "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "cpu",
                   "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--pool=solo", "--concurrency=1",
                   "--without-mingle", "--without-gossip", "--loglevel=WARNING"]  # fmt: skip
        process = self._spawn("worker", command, env)
        settings = self._settings()
        client = redis_client(settings)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}:\n{self.log_tail('worker')}")
            if live_workers(client, settings):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the worker did not announce itself within {timeout}s:\n{self.log_tail('worker')}")

    def _start_proxy(self) -> None:
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
        if nginx is None:
            self.notes.append("--proxy: nginx is not installed (apt-get install -y nginx-light); measured without it")
            return
        self.proxy_port = free_port()
        state = self.root / "proxy"
        state.mkdir()
        for folder in (self.root, state):  # nginx's workers run as nobody when started as root: they spool here
            folder.chmod(0o755)
        text, self.proxy_config = render_proxy_config(
            state, self.proxy_port, self.api_port, {**self.env(), **self.gateway_env}
        )
        (state / "nginx.conf").write_text(text)
        command = [nginx, "-p", str(state), "-e", "stderr", "-c", str(state / "nginx.conf"), "-g", "daemon off;"]
        self._spawn("proxy", command, os.environ.copy())
        self._wait_listening(self.proxy_port, "proxy")
        self.base_url = f"http://127.0.0.1:{self.proxy_port}"

    def restart_gateway(self) -> int:
        """Stop the gateway (it no longer answers) and start a fresh one on the same port; its pid."""
        self._stop(self.processes.pop("gateway"))
        self._start_gateway()
        return self.processes["gateway"].pid

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # each started in its own session: its whole tree
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        self._stop_announcing.set()
        for process in self.processes.values():
            self._stop(process)
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                client.delete(key)
        shutil.rmtree(self.root, ignore_errors=True)


def render_proxy_config(state: Path, listen_port: int, upstream_port: int, env: dict[str, str]) -> tuple[str, str]:
    """nginx.conf for a proxy on `listen_port` in front of the gateway, and where it came from.

    The project's config when there is one: compose/nginx.conf.template rendered by compose/proxy-conf.sh from the
    gateway's settings in `env`, as scripts/stack.sh does for `make up`. Else a plain pass-through with nginx's
    defaults, which shows what a proxy alone changes.
    """
    if PROXY_TEMPLATE.is_file() and PROXY_RENDER.is_file():
        rendered = subprocess.run(
            ["bash", str(PROXY_RENDER)],
            env={**env, "PROXY_LISTEN": f"127.0.0.1:{listen_port}", "PROXY_UPSTREAM": f"127.0.0.1:{upstream_port}",
                 "PROXY_STATE_DIR": str(state)},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return rendered.stdout, "the project's config (compose/proxy-conf.sh)"
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (state / name).mkdir(exist_ok=True)
    return (
        f"""pid {state}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {state}/client_body;
  proxy_temp_path {state}/proxy;
  fastcgi_temp_path {state}/fastcgi;
  uwsgi_temp_path {state}/uwsgi;
  scgi_temp_path {state}/scgi;
  server {{
    listen 127.0.0.1:{listen_port};
    location / {{ proxy_pass http://127.0.0.1:{upstream_port}; proxy_http_version 1.1; }}
  }}
}}
""",
        "nginx defaults (the project has no proxy config)",
    )


def stack_uvicorn_limits() -> list[str]:
    """The uvicorn options scripts/stack.sh gives the gateway (its UVICORN_LIMITS array), [] when it has none."""
    import re
    import shlex

    found = re.search(r"^UVICORN_LIMITS=\((.*)\)$", (ROOT / "scripts" / "stack.sh").read_text(), re.MULTILINE)
    return shlex.split(found.group(1)) if found else []


# --- load ------------------------------------------------------------------------------------------------------


@dataclass
class Outcomes:
    latencies_s: list[float] = field(default_factory=list)  # answered requests, any status
    codes: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    started: int = 0

    def add(self, latency_s: float, code: int | str) -> None:
        if isinstance(code, int):
            self.latencies_s.append(latency_s)
        else:
            self.transport_errors += 1
        self.codes[str(code)] = self.codes.get(str(code), 0) + 1

    def summary(self, wall_s: float) -> dict:
        by_class = {
            f"{digit}xx": sum(n for code, n in self.codes.items() if code.startswith(digit)) for digit in "2345"
        }
        answered = len(self.latencies_s)
        return {
            "requests": self.started,
            **by_class,
            "conn_err": self.transport_errors,
            "cut": self.started - answered - self.transport_errors,
            "status_codes": dict(sorted(self.codes.items())),
            "wall_s": round(wall_s, 2),
            "per_s": round(answered / wall_s, 1) if wall_s > 0 else None,
            **percentiles(self.latencies_s),
        }


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def route_requests(small_csv: bytes) -> dict[str, Request]:
    return {
        "GET /healthz": lambda client, _i: client.get("/healthz"),
        "GET /v1/jobs": lambda client, _i: client.get("/v1/jobs"),
        "GET /v1/datasets": lambda client, _i: client.get("/v1/datasets"),
        "POST /v1/datasets": lambda client, i: client.post(
            "/v1/datasets", files={"file": (f"bench-{i}.csv", small_csv, "text/csv")}
        ),
        "POST /v1/score": lambda client, _i: client.post("/v1/score", json=SCORE_BODY),
    }


async def timed(outcomes: Outcomes, client: httpx.AsyncClient, request: Request, index: int) -> None:
    outcomes.started += 1
    started = time.perf_counter()
    try:
        response = await request(client, index)
    except httpx.HTTPError as exc:
        outcomes.add(time.perf_counter() - started, type(exc).__name__)
        return
    outcomes.add(time.perf_counter() - started, response.status_code)


async def run_level(base_url: str, headers: dict, request: Request, *, concurrency: int, count: int, cap_s: float):
    """`count` requests, `concurrency` at a time, for at most `cap_s` seconds."""
    outcomes = Outcomes()
    next_index = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def loop(client: httpx.AsyncClient) -> None:
        for index in next_index:
            await timed(outcomes, client, request, index)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=cap_s, limits=limits) as client:
        tasks = [asyncio.create_task(loop(client)) for _ in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=cap_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return outcomes.summary(time.perf_counter() - started)


async def wait_responsive(base_url: str, headers: dict, *, cap_s: float, answer_within_s: float = 1.0) -> float | None:
    """Seconds until GET /healthz and GET /v1/jobs both answer (any status) within `answer_within_s`; None if not
    within `cap_s`. /v1/jobs runs on the request thread pool: a pool that is stuck shows there, not in /healthz."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=answer_within_s) as client:
        while time.perf_counter() - started < cap_s:
            probe = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/healthz")
                await client.get("/v1/jobs")
                if time.perf_counter() - probe < 2 * answer_within_s:
                    return round(time.perf_counter() - started, 1)
            await asyncio.sleep(0.5)
    return None


async def under_score_load(base_url: str, headers: dict, *, scores: int, seconds: float, cap_s: float) -> dict:
    """`scores` concurrent POST /v1/score in flight; meanwhile 4 pollers time GET /healthz and GET /v1/jobs.

    A poll unanswered `cap_s` after the measurement window ends is given up; its wait so far is kept (a lower
    bound of its latency) and counts in the route's p99 as such.
    """
    score_outcomes = Outcomes()
    polls = {"GET /healthz": Outcomes(), "GET /v1/jobs": Outcomes()}
    unanswered: dict[str, list[float]] = {route: [] for route in polls}
    limits = httpx.Limits(max_connections=scores, max_keepalive_connections=scores)

    async def poller(client: httpx.AsyncClient, index: int, stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            route = list(polls)[index % 2]
            index += 1
            started = time.perf_counter()
            request = functools.partial(lambda c, _i, path: c.get(path), path=route.split()[1])
            task = asyncio.create_task(timed(polls[route], client, request, 0))
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=max(stop_at - started, 0.1) + cap_s)
            except TimeoutError:
                task.cancel()
                unanswered[route].append(time.perf_counter() - started)
            await asyncio.sleep(0.05)

    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=cap_s + seconds, limits=limits) as scorer,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=cap_s + seconds) as reader,
    ):
        started = time.perf_counter()
        request = route_requests(b"")["POST /v1/score"]
        score_tasks = [asyncio.create_task(timed(score_outcomes, scorer, request, i)) for i in range(scores)]
        await asyncio.sleep(1.0)  # let them arrive and be in flight
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(poller(reader, index, stop_at) for index in range(4)))
        _, pending = await asyncio.wait(score_tasks, timeout=max(started + seconds + cap_s - time.perf_counter(), 1))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - started
    result: dict = {}
    for route, outcomes in polls.items():
        waits = unanswered[route]
        result[route] = {
            **outcomes.summary(seconds),
            "unanswered": len(waits),
            # Answered latencies and the waits of the unanswered ones (lower bounds): the p99 a client saw.
            "p99_with_unanswered_ms": percentiles(outcomes.latencies_s + waits).get("p99_ms"),
            "longest_wait_ms": round(1000 * max(outcomes.latencies_s + waits, default=0), 1),
        }
    result["POST /v1/score"] = score_outcomes.summary(wall)
    return result


# --- slow clients ----------------------------------------------------------------------------------------------


def hold_time(port: int, first: bytes, *, trickle: bytes = b"", interval_s: float = 2.0, cap_s: float) -> dict:
    """Send `first` (then `trickle` a byte every `interval_s`) and time how long the server keeps the socket."""
    started = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as exc:
        return {"held_s": 0.0, "end": f"connect failed ({type(exc).__name__})"}
    with sock:
        pending = trickle
        try:
            if first:
                sock.sendall(first)
            while (now := time.monotonic()) < started + cap_s:
                sock.settimeout(max(min(started + cap_s - now, interval_s if pending else cap_s), 0.01))
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    if pending:
                        sock.sendall(pending[:1])
                        pending = pending[1:]
                    continue
                held = round(time.monotonic() - started, 1)
                if not data:
                    return {"held_s": held, "end": "closed"}
                status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
                return {"held_s": held, "end": "answered " + " ".join(status_line.split()[1:2])}
        except OSError as exc:  # reset, or a send into a closed socket
            return {"held_s": round(time.monotonic() - started, 1), "end": f"{type(exc).__name__}"}
    return {"held_s": round(cap_s, 1), "end": "still open at the cap"}


def slow_probes(port: int, api_key: str, *, cap_s: float) -> dict[str, dict]:
    """Each kind of slow client at once, in threads, on `port`."""
    head = f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n".encode()
    body_head = head + b"Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    probes = {
        "connect, send nothing": dict(first=b""),
        "half the headers, then nothing": dict(first=head),
        "headers + 100 of 4096 body bytes, then nothing": dict(first=body_head + b"{" + b" " * 99),
        "body trickled 1 byte / 2 s": dict(first=body_head + b"{", trickle=b" " * 4000, interval_s=2.0),
    }
    results: dict[str, dict] = {}
    threads = [
        threading.Thread(target=lambda n=name, o=options: results.__setitem__(n, hold_time(port, cap_s=cap_s, **o)))
        for name, options in probes.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(cap_s + 10)
    return {name: results.get(name, {"held_s": None, "end": "probe did not finish"}) for name in probes}


def slow_crowd(port: int, api_key: str, *, crowd: int, cap_s: float) -> dict:
    """`crowd` connections that stop half-way through their headers; then is a normal GET /healthz served?"""
    sockets, refused = [], 0
    head = f"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n".encode()
    try:
        for _ in range(crowd):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(head)
                sockets.append(sock)
            except OSError:
                refused += 1
        time.sleep(0.5)
        started = time.perf_counter()
        try:
            code: int | str = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=cap_s).status_code
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        return {
            "crowd": crowd,
            "refused": refused,
            "healthz": code,
            "healthz_ms": round(1000 * (time.perf_counter() - started), 1),
        }
    finally:
        for sock in sockets:
            sock.close()


# --- the run ---------------------------------------------------------------------------------------------------


def predict_rss(base_url: str, headers: dict, worker_pid: int | None, *, jobs: int, rows: int) -> dict:
    """The worker's RSS (process tree) after one warm-up predict job and after `jobs` more."""

    def wait_job(client: httpx.Client, job_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} did not finish within {timeout}s")

    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        dataset = client.post("/v1/datasets", files={"file": ("bench.csv", small_dataset(rows), "text/csv")})
        dataset_id = dataset.raise_for_status().json()["id"]

        def predict() -> str:
            response = client.post("/v1/jobs/predict", json={"dataset": dataset_id})
            return wait_job(client, response.raise_for_status().json()["job_id"])["state"]

        warm = predict()
        before = tree_rss_mib(worker_pid) if worker_pid else None
        states: dict[str, int] = {}
        started = time.perf_counter()
        for _ in range(jobs):
            state = predict()
            states[state] = states.get(state, 0) + 1
        return {
            "warm_up": warm,
            "jobs": jobs,
            "rows_each": rows,
            "states": states,
            "seconds_per_job": round((time.perf_counter() - started) / max(jobs, 1), 2),
            "worker_rss_mib_before": before,
            "worker_rss_mib_after": tree_rss_mib(worker_pid) if worker_pid else None,
        }


def upload_once(base_url: str, headers: dict, content: bytes, timeout: float) -> dict:
    started = time.perf_counter()
    try:
        response = httpx.post(
            f"{base_url}/v1/datasets",
            headers=headers,
            timeout=timeout,
            files={"file": ("max.csv", content, "text/csv")},
        )
        code: int | str = response.status_code
    except httpx.HTTPError as exc:
        code = type(exc).__name__
    return {"bytes": len(content), "status": code, "seconds": round(time.perf_counter() - started, 2)}


def run(
    args: argparse.Namespace,
    *,
    targets: dict[str, str],
    api_key: str,
    gateway_pid: int | None,
    worker_pid: int | None,
    restart: Callable[[], int] | None = None,
) -> dict:
    """Every phase, against each of `targets` (the gateway itself and its proxy, when there is one)."""
    deadline = time.monotonic() + args.time_cap
    headers = {"Authorization": f"Bearer {api_key}"}
    state = {"pid": gateway_pid}
    report: dict = {"targets": targets, "gateway_pid_found": gateway_pid is not None, "memory": {}, "notes": []}
    report["memory"]["start"] = memory_mib(gateway_pid)
    gateway_url = targets.get(DIRECT) or next(iter(targets.values()))

    def left() -> float:
        return deadline - time.monotonic()

    def say(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    def settle(moment: str) -> float | None:
        """Seconds until the gateway itself answers again (see wait_responsive); restarts our own if it never does."""
        seconds = asyncio.run(wait_responsive(gateway_url, headers, cap_s=min(args.drain_cap, max(left(), 1))))
        if seconds is None and restart is not None:
            report["memory"][f"{moment}, before its restart"] = memory_mib(state["pid"])
            report["notes"].append(
                f"the gateway did not answer /healthz and /v1/jobs within 1 s for {args.drain_cap:g} s after {moment}:"
                " restarted it for the next phases"
            )
            say(report["notes"][-1])
            state["pid"] = restart()
        return seconds

    sweep_targets = {name: url for name, url in targets.items() if args.sweep_via in ("both", name.split()[0])}
    sweep_targets = sweep_targets or targets
    requests = route_requests(small_dataset(2))
    report["sweep"], report["busy_after_s"], report["under_score_load"] = {}, {}, {}
    for target, url in sweep_targets.items():
        report["sweep"][target], report["busy_after_s"][target] = {}, {}
        for route in args.routes:
            report["sweep"][target][route] = {}
            for level in args.levels:
                if left() < args.level_cap:
                    report["sweep"][target][route][level] = {"skipped": "time cap"}
                    continue
                # A score request may wait SCORE_TIMEOUT_S: one wave per level; others `rounds` waves, >= min.
                count = level if route == "POST /v1/score" else max(level * args.rounds, args.min_requests)
                say(f"{target}: {route} x{count} at concurrency {level}")
                report["sweep"][target][route][level] = asyncio.run(
                    run_level(url, headers, requests[route], concurrency=level, count=count, cap_s=args.level_cap)
                )
            report["busy_after_s"][target][route] = settle(f"the {route} sweep {target}")
        report["memory"][f"after the sweep, {target}"] = memory_mib(state["pid"])

        if args.load_scores and left() > args.load_seconds + 2 * args.level_cap:
            say(f"{target}: /healthz and /v1/jobs while {args.load_scores} score requests are in flight")
            report["under_score_load"][target] = asyncio.run(
                under_score_load(url, headers, scores=args.load_scores, seconds=args.load_seconds, cap_s=args.level_cap)
            )
            report["busy_after_s"][target]["score load"] = settle(f"the score load {target}")
            report["memory"][f"after the score load, {target}"] = memory_mib(state["pid"])

    if args.slow_cap and left() > args.slow_cap + 10:
        say(f"slow clients for up to {args.slow_cap:g}s: {', '.join(targets)}")
        results: dict[str, dict] = {}
        threads = [
            threading.Thread(target=lambda n=name, u=url: results.__setitem__(
                n, slow_probes(urlsplit(u).port or 80, api_key, cap_s=args.slow_cap)))
            for name, url in targets.items()
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report["slow_clients"] = results
        if args.crowd:
            report["slow_crowd"] = {
                name: slow_crowd(urlsplit(url).port or 80, api_key, crowd=args.crowd, cap_s=args.level_cap)
                for name, url in targets.items()
            }
        settle("the slow clients")
        report["memory"]["after the slow clients"] = memory_mib(state["pid"])

    if args.upload_mib and left() > 30:
        content = minimal_rows_csv(int(args.upload_mib * 1024 * 1024))
        report["max_upload"] = {}
        for name, url in targets.items():  # the gateway itself (its RSS), and through the proxy (its verdict)
            say(f"{name}: one upload of {len(content):,} bytes of minimal rows")
            report["max_upload"][name] = upload_once(url, headers, content, timeout=min(left(), args.upload_timeout))
        del content
        report["memory"]["after the maximal upload"] = memory_mib(state["pid"])
        settle("the maximal upload")

    if args.predict_jobs and left() > 60:
        say(f"{args.predict_jobs} consecutive predict jobs (worker RSS)")
        report["predict_jobs"] = predict_rss(gateway_url, headers, worker_pid, jobs=args.predict_jobs, rows=args.rows)
    return report


# --- markdown --------------------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    def ms(value) -> str:
        return "" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"

    lines = [
        f"{report['when']}, {report['cpus']} CPUs, load average {report['load_before']} → {report['load_after']};"
        f" worker: {report['worker']}; proxy: {report['proxy']}",
        "",
        f"`{report['command']}`",
        "",
        "| via | route | concurrency | requests | 2xx | 4xx | 5xx | conn err | cut | p50 ms | p99 ms | answered/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target, routes in report.get("sweep", {}).items():
        for route, levels in routes.items():
            for level, row in levels.items():
                if "skipped" in row:
                    lines.append(f"| {target} | {route} | {level} | skipped ({row['skipped']}) |||||||||")
                    continue
                lines.append(
                    f"| {target} | {route} | {level} | {row['requests']} | {row['2xx']} | {row['4xx']} | "
                    f"{row['5xx']} | {row['conn_err']} | {row['cut']} | {ms(row.get('p50_ms'))} | "
                    f"{ms(row.get('p99_ms'))} | {row['per_s']} |"
                )
    for target, moments in report.get("busy_after_s", {}).items():
        slow = {
            moment: f"{seconds} s" if seconds is not None else "not within the drain cap"
            for moment, seconds in moments.items()
            if seconds is None or seconds >= 1
        }
        if slow:
            lines += ["", f"Time until the gateway answered /healthz and /v1/jobs within 1 s again, {target}: "
                      + ", ".join(f"after {moment} {seconds}" for moment, seconds in slow.items())]  # fmt: skip
    for target, load in report.get("under_score_load", {}).items():
        score = load["POST /v1/score"]
        lines += [
            "",
            f"{target}: while {score['requests']} `POST /v1/score` were in flight (their answers: "
            f"{score['status_codes']}, p50 {ms(score.get('p50_ms'))} ms, p99 {ms(score.get('p99_ms'))} ms):",
            "",
            "| route | requests | answered | unanswered | p50 ms (answered) | p99 ms (all) | longest wait ms | codes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for route in ("GET /healthz", "GET /v1/jobs"):
            row = load[route]
            answered = row["requests"] - row["cut"] - row["conn_err"]
            p99 = ms(row.get("p99_with_unanswered_ms"))
            lines.append(
                f"| {route} | {row['requests']} | {answered} | {row['unanswered']} | {ms(row.get('p50_ms'))} | "
                f"{'≥ ' if row['unanswered'] and p99 else ''}{p99} | {ms(row['longest_wait_ms'])} | "
                f"{row['status_codes']} |"
            )
    slow = report.get("slow_clients")
    if slow:
        targets = list(slow)
        lines += [
            "",
            f"Slow clients (raw sockets, cap {report['slow_cap']:g} s): how long the connection was held, and how"
            " it ended",
            "",
            "| client | " + " | ".join(targets) + " |",
            "|---|" + "---|" * len(targets),
        ]
        for probe in next(iter(slow.values())):
            cells = [f"{slow[t][probe]['held_s']} s, {slow[t][probe]['end']}" for t in targets]
            lines.append(f"| {probe} | " + " | ".join(cells) + " |")
        for target, crowd in report.get("slow_crowd", {}).items():
            lines.append(
                f"\n{target}: with {crowd['crowd']} connections stuck half-way through their headers "
                f"({crowd['refused']} refused), a new GET /healthz got {crowd['healthz']} in "
                f"{ms(crowd['healthz_ms'])} ms."
            )
    for target, result in report.get("max_upload", {}).items():
        lines.append(
            f"\nOne upload of {result['bytes']:,} bytes of minimal rows, {target}: {result['status']} in "
            f"{result['seconds']} s."
        )
    memory = report.get("memory", {})
    if any(memory.values()):
        lines += ["", "| gateway memory (MiB) | RSS | peak RSS (VmHWM) |", "|---|---|---|"]
        lines += [f"| {moment} | {m.get('rss_mib')} | {m.get('peak_rss_mib')} |" for moment, m in memory.items() if m]
    jobs = report.get("predict_jobs")
    if jobs:
        lines.append(
            f"\nWorker RSS over {jobs['jobs']} predict jobs of {jobs['rows_each']} rows: "
            f"{jobs['worker_rss_mib_before']} → {jobs['worker_rss_mib_after']} MiB ({jobs['states']})."
        )
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--base-url", help="a running gateway or its proxy (127.0.0.1 only); default: start one (see --worker)")
    add("--direct-url", help="with --base-url on a proxy: the gateway itself behind it")
    add("--gateway-pid", type=int, help="with --base-url: the gateway's pid for its RSS (default: found by port)")
    add("--run-dir", type=Path, default=Path(os.environ.get("RUN_DIR", ROOT / "var" / "run")),
        help="with --base-url: where stack.sh keeps api_key and worker-*.pid")  # fmt: skip
    add("--worker", choices=("phantom", "real", "none"), default="phantom",
        help="own stack: a busy worker that never consumes (default), a real CPU worker, or none")  # fmt: skip
    add("--proxy", action="store_true", help="own stack: nginx in front of the gateway (the project's config)")
    add("--score-timeout", type=float, default=10.0, help="own stack: SCORE_TIMEOUT_S (default 10)")
    add("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
        help="own stack: a setting for the gateway and the proxy's config (repeatable)")  # fmt: skip
    add("--uvicorn-arg", action="append", default=[], metavar="ARG",
        help="own stack: a uvicorn option after scripts/stack.sh's UVICORN_LIMITS")  # fmt: skip
    add("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"), help="own stack")
    add("--routes", type=lambda text: [route.strip() for route in text.split(",")], default=list(ROUTES),
        help="comma-separated, from: " + ", ".join(ROUTES))  # fmt: skip
    add("--levels", type=parse_levels, default=[1, 10, 50, 200], help="concurrency levels (default 1,10,50,200)")
    add("--rounds", type=int, default=2, help="requests per level: level x rounds (score: level)")
    add("--min-requests", type=int, default=20, help="at least this many requests per level (not score)")
    add("--sweep-via", choices=("both", "direct", "proxy"), default="both", help="where the sweep and load go")
    add("--level-cap", type=float, default=30.0, help="seconds one level may take; also the client timeout")
    add("--drain-cap", type=float, default=120.0, help="most seconds to wait for the gateway to answer again")
    add("--load-scores", type=int, default=200, help="score requests in flight while /healthz is timed (0: skip)")
    add("--load-seconds", type=float, default=15.0, help="how long /healthz is timed under that load")
    add("--slow-cap", type=float, default=30.0, help="longest a slow client is kept, seconds (0: skip)")
    add("--crowd", type=int, default=200, help="half-header connections held at once (0: skip)")
    add("--upload-mib", type=float, default=30.0, help="size of the maximal upload, MiB (0: skip)")
    add("--upload-timeout", type=float, default=120.0, help="client timeout of that upload, seconds")
    add("--predict-jobs", type=int, default=0, help="consecutive predict jobs for the worker's RSS (a real worker)")
    add("--rows", type=int, default=2, help="rows per predict job")
    add("--time-cap", type=float, default=900.0, help="the whole run's budget, seconds")
    add("--json", type=Path, help="also write every figure here")
    return parser


def main(argv: list[str] | None = None) -> int:
    import shlex

    args = build_parser().parse_args(argv)
    unknown = [route for route in args.routes if route not in ROUTES]
    if unknown:
        print(f"bench: unknown route(s) {unknown}; choose from {', '.join(ROUTES)}", file=sys.stderr)
        return 2
    for url in (args.base_url, args.direct_url):
        if url and urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            print("bench: this benchmark only sends traffic to 127.0.0.1", file=sys.stderr)
            return 2
    command = "scripts/bench/bench_api.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    load_before = " ".join(f"{value:.1f}" for value in os.getloadavg())
    stack, worker_pid, restart = None, None, None
    try:
        if args.base_url:
            api_key = os.environ.get("API_KEY") or (args.run_dir / "api_key").read_text().strip()
            targets = {DIRECT: args.direct_url, PROXY: args.base_url} if args.direct_url else {DIRECT: args.base_url}
            gateway_pid = args.gateway_pid or listener_pid(urlsplit(targets[DIRECT]).port or 80)
            pid_files = sorted(args.run_dir.glob("worker-*.pid"))
            worker_pid = int(pid_files[0].read_text()) if pid_files else None
            worker, proxy = "as running", "as running" if args.direct_url else "none named (--direct-url)"
        else:
            stack = OwnStack(
                worker=args.worker,
                score_timeout_s=args.score_timeout,
                redis_url=args.redis_url,
                proxy=args.proxy,
                gateway_env=dict(item.split("=", 1) for item in args.gateway_env),
                uvicorn_args=[*stack_uvicorn_limits(), *args.uvicorn_arg],
            )
            print(f"bench: starting a gateway (worker: {args.worker}) under {stack.root}", file=sys.stderr, flush=True)
            stack.start()
            api_key, targets = stack.api_key, {DIRECT: stack.direct_url}
            if stack.base_url != stack.direct_url:
                targets[PROXY] = stack.base_url
            gateway_pid, restart = stack.processes["gateway"].pid, stack.restart_gateway
            worker_pid = stack.processes["worker"].pid if "worker" in stack.processes else None
            worker = f"{args.worker}, SCORE_TIMEOUT_S={args.score_timeout:g}"
            proxy = f"nginx, {stack.proxy_config}" if PROXY in targets else "none"
            uvicorn = " ".join(stack.uvicorn_args) or "none"
        report = run(
            args, targets=targets, api_key=api_key, gateway_pid=gateway_pid, worker_pid=worker_pid, restart=restart
        )
    finally:
        if stack is not None:
            stack.stop()
    report.update(
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=os.cpu_count(),
        load_before=load_before,
        load_after=" ".join(f"{value:.1f}" for value in os.getloadavg()),
        worker=worker,
        proxy=proxy,
        slow_cap=args.slow_cap,
        command=command,
    )
    if stack is not None:
        report["notes"] = [f"the gateway's uvicorn options: {uvicorn}", *stack.notes, *report["notes"]]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
