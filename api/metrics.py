"""The gateway's Prometheus metrics: GET /metrics (admin key or loopback), fed by a small ASGI middleware.

Names follow `arena_<what>_<unit>` (`_total` counters, `_seconds` durations). Labels stay bounded: the route is the
path template (`/v1/jobs/{job_id}`), never the raw path; a refusal's reason is one of REFUSAL_REASONS; jobs are
counted by kind, state and tenant (tenants come from API_KEYS_FILE, a short list). Jobs and queue depths are read
at scrape time (a scrape lists the index of job records, reads only the records of unfinished jobs and of jobs it has
not seen finished, and does one LLEN per queue), so nothing is counted twice across gateway restarts.

One registry per app, not the process-wide default: tests build many apps in one process.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.job_store import JobStore
from shared.names import CPU_QUEUE, GPU_QUEUE
from shared.settings import Settings
from shared.worker_presence import live_workers

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "<unmatched>"  # 404s for paths no route has: one label value, whatever was asked
# Why a 429 or 503 was answered: found from the setting or cause its detail names (error messages name the fix).
REFUSAL_REASONS = (
    ("SCORE_MAX_IN_FLIGHT", "score_capacity"),
    ("MAX_CONCURRENT_UPLOADS", "upload_slots"),
    ("REDIS_URL", "broker_unavailable"),
    ("no worker is up", "no_worker"),
    ("Redis", "broker_unavailable"),
)
JOBS_CACHE_S = 10.0  # one count of the jobs per this long, however often it is scraped
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def refusal_reason(path: str, detail: str) -> str:
    """The bounded reason label of a 429/503 answer."""
    if path == "/readyz":
        return "not_ready"
    for marker, reason in REFUSAL_REASONS:
        if marker in detail:
            return reason
    return "other"


@dataclass(frozen=True)
class JobSummary:
    """What the job gauge needs of a record, and what the creation index checks a record against."""

    id: str
    created_at: datetime
    tenant: str | None
    kind: str
    state: str
    finished: bool


class StackCollector(Collector):
    """Jobs by kind, state and tenant; messages waiting per Celery queue; live workers per queue: read when scraped."""

    def __init__(
        self, jobs: JobStore, settings: Settings, client: redis.Redis, *, cache_s: float = JOBS_CACHE_S
    ) -> None:
        self.jobs = jobs
        self.cache_s = cache_s
        self.settings = settings
        self.client = client
        self.queues = [CPU_QUEUE, GPU_QUEUE, *settings.gpu_queues]
        self._jobs_seen: tuple[float, Tally] = (float("-inf"), Tally())
        self._finished: dict[str, JobSummary] = {}
        self._lock = threading.Lock()

    def _job_tally(self) -> Tally:
        with self._lock:
            at, tally = self._jobs_seen
            if time.monotonic() - at >= self.cache_s:
                summaries = list(self.jobs.created.newest_first(self._summary, tenant=None))
                # A finished record never changes again: it is read once; one deleted since drops out here.
                self._finished = {summary.id: summary for summary in summaries if summary.finished}
                tally = Tally((summary.kind, summary.state, summary.tenant or "none") for summary in summaries)
                self._jobs_seen = (time.monotonic(), tally)
            return tally

    def _summary(self, job_id: str) -> JobSummary:
        if (known := self._finished.get(job_id)) is not None:
            return known
        record = self.jobs.read(job_id)
        return JobSummary(record.id, record.created_at, record.tenant, record.kind, record.state, record.terminal)

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "arena_jobs", "Job records by kind, state and tenant.", labels=["kind", "state", "tenant"]
        )
        for (kind, state, tenant), count in sorted(self._job_tally().items()):
            jobs.add_metric([kind, state, tenant], count)
        yield jobs
        up = GaugeMetricFamily("arena_redis_up", "1 when Redis answered this scrape, else 0.")
        depth = GaugeMetricFamily(
            "arena_queue_messages", "Messages waiting on a Celery queue (Redis LLEN), not yet taken.", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "arena_workers_live", "Workers announcing themselves that consume the queue.", labels=["queue"]
        )
        try:
            prefix = self.settings.REDIS_KEY_PREFIX
            with self.client.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    pipe.llen(f"{prefix}{queue}")
                lengths = pipe.execute()
            consumers = Tally(queue for queues in live_workers(self.client, self.settings).values() for queue in queues)
        except redis.RedisError as exc:
            log.warning("metrics: Redis does not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue, length in zip(self.queues, lengths, strict=True):
            depth.add_metric([queue], length)
        for queue in sorted(set(self.queues) | set(consumers)):
            workers.add_metric([queue], consumers.get(queue, 0))
        yield from (up, depth, workers)


class GatewayMetrics:
    """The gateway's registry and the instruments the middleware and routes feed."""

    def __init__(
        self, *, settings: Settings, jobs: JobStore, in_flight: Callable[[], float], client: redis.Redis
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "arena_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "arena_http_request_duration_seconds",
            "Time to answer a request (to the first byte of the body), by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "arena_http_refusals",
            "429 and 503 answers of the gateway, by status and reason (score_capacity, upload_slots, ...).",
            ["status", "reason"],
            registry=self.registry,
        )
        in_flight_gauge = Gauge(
            "arena_score_requests_in_flight",
            "POST /v1/score requests waiting on a worker now (at most SCORE_MAX_IN_FLIGHT).",
            registry=self.registry,
        )
        in_flight_gauge.set_function(in_flight)
        self.stack = StackCollector(jobs, settings, client)
        self.registry.register(self.stack)


def route_template(scope: Scope, templates: list[tuple[re.Pattern, str]]) -> str:
    """The documented path template this request's path matches (literal paths first, so /v1/jobs/predict is not
    /v1/jobs/{job_id}); else the path of the app-level route that took it (/docs); else UNMATCHED_ROUTE. By path,
    not by the route the router picked: requests refused before routing (the key gate, the body cap) count too."""
    for pattern, template in templates:
        if pattern.match(scope["path"]):
            return template
    route = scope.get("route")
    if route is not None and isinstance(getattr(route, "path", None), str):
        return route.path
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status; reads the detail of 429/503 answers."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, openapi: Callable[[], dict]) -> None:
        self.app = app
        self.metrics = metrics
        self.openapi = openapi
        self._templates: list[tuple[re.Pattern, str]] | None = None

    def templates(self) -> list[tuple[re.Pattern, str]]:
        """The documented paths as patterns, built on first use (the app's routes are complete by then)."""
        if self._templates is None:
            paths = sorted(self.openapi().get("paths", {}), key=lambda path: (path.count("{"), -len(path)))
            self._templates = [(compile_path(path)[0], path) for path in paths]
        return self._templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered: dict = {}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                answered["seconds"] = time.perf_counter() - started
            elif message["type"] == "http.response.body" and answered.get("status") in (429, 503):
                answered["body"] = answered.get("body", b"") + message.get("body", b"")[:2048]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            status = answered.get("status", 500)  # no answer started: the server answers 500
            labels = (scope["method"], route_template(scope, self.templates()), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(answered.get("seconds", time.perf_counter() - started))
            if status in (429, 503):
                try:
                    detail = str(json.loads(answered.get("body", b"{}")).get("detail", ""))
                except (ValueError, AttributeError):
                    detail = ""
                self.metrics.refusals.labels(str(status), refusal_reason(scope["path"], detail)).inc()
