"""A worker's Prometheus metrics, served on its own port (WORKER_METRICS_PORT; 0: off).

A port per worker rather than prometheus_client's multiprocess mode: workers run --pool=solo (one process each)
on several hosts, so there is no shared directory of metric files to merge, and Prometheus scrapes each worker as
its own target (its `instance` label), which is how it tells workers apart anyway.

Names follow `arena_worker_<what>_<unit>`; labels stay bounded (the model kind, the outcome).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, start_http_server

log = logging.getLogger(__name__)

CHUNKS = Counter("arena_worker_chunks", "Predict chunks this worker finished, by outcome.", ["outcome"])
ROWS = Counter("arena_worker_rows", "Rows this worker judged in predict chunks.")
ROWS_PER_SECOND = Gauge("arena_worker_rows_per_second", "Rows per second of this worker's last predict chunk.")
MODEL_LOAD_SECONDS = Gauge(
    "arena_worker_model_load_seconds", "Time the last load of a model took, by model (judge, encoder).", ["model"]
)
EMBEDDING_CACHE_LOOKUPS = Counter(
    "arena_worker_embedding_cache_lookups", "Texts looked up in the embedding cache, by result (hit, miss).", ["result"]
)
HEARTBEATS = Counter("arena_worker_heartbeats", "Announcements of this worker in Redis (one per WORKER_HEARTBEAT_S).")


def serve(port: int) -> None:
    """Serve the metrics on `port` (all interfaces: Prometheus scrapes from another container or host); 0: off."""
    if port <= 0:
        return
    try:
        start_http_server(port)
    except OSError as exc:  # another worker on this host took the port: the worker still runs, without metrics
        log.warning("metrics: port %s is taken (%s): give each worker on a host its own WORKER_METRICS_PORT", port, exc)
        return
    log.info("metrics on :%s/metrics", port)
