"""A worker's metrics port (WORKER_METRICS_PORT) serves what its steps count: here the embedding cache's hits."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from workers.common.metrics import serve
from workers.predictor.sentence_encoder import EmbeddingCache, text_digest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lookups(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "arena_worker_embedding_cache_lookups"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_the_metrics_port_counts_embedding_cache_hits_and_misses(tmp_path):
    port = free_port()
    serve(port)
    before = lookups(port)
    cache = EmbeddingCache(tmp_path, max_bytes=1 << 20, min_texts=1)
    stored = [text_digest(f"text {i}") for i in range(3)]
    cache.store(stored, np.ones((3, 4), dtype=np.float32))
    found, _ = cache.lookup([*stored[:2], text_digest("never stored")])
    assert found.tolist() == [True, True, False]
    after = lookups(port)
    assert after["hit"] - before.get("hit", 0) == 2
    assert after["miss"] - before.get("miss", 0) == 1
    serve(0)  # off: nothing to start
