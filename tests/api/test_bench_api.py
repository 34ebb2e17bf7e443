"""scripts/bench/bench_api.py keeps working: a tiny run against a gateway it starts itself (a real uvicorn process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.settings import REPO_ROOT
from tests.api.conftest import TEST_REDIS_URL, redis_or_fail

sys.path.insert(0, str(REPO_ROOT / "scripts" / "bench"))
import bench_api  # noqa: E402


def test_levels_are_parsed_and_bounded():
    assert bench_api.parse_levels("1, 10,200") == [1, 10, 200]
    for bad in ("", "0,5", "5,5000"):
        with pytest.raises(Exception, match="levels"):
            bench_api.parse_levels(bad)


def test_refuses_to_send_traffic_off_the_machine():
    assert bench_api.main(["--base-url", "http://example.com:8000"]) == 2


def test_minimal_rows_reach_the_asked_size():
    content = bench_api.minimal_rows_csv(10_000)
    assert 10_000 <= len(content) < 10_100
    assert content.startswith(b"id,prompt,response_a,response_b\n")


def test_a_tiny_run_measures_every_phase(tmp_path):
    redis_or_fail(TEST_REDIS_URL)
    report_path = tmp_path / "report.json"
    command = [
        sys.executable, str(REPO_ROOT / "scripts" / "bench" / "bench_api.py"), "--redis-url", TEST_REDIS_URL,
        "--levels", "1,3", "--min-requests", "3", "--level-cap", "5", "--drain-cap", "10",
        "--load-scores", "4", "--load-seconds", "1", "--score-timeout", "1",
        "--slow-cap", "1", "--crowd", "3", "--upload-mib", "0.05", "--time-cap", "120", "--json", str(report_path),
    ]  # fmt: skip
    finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(report_path.read_text())

    # Every route at every level was measured, and the cheap ones were answered.
    sweep = report["sweep"]["direct (uvicorn)"]
    assert set(sweep) == set(bench_api.ROUTES)
    for route in ("GET /healthz", "GET /v1/jobs", "GET /v1/datasets", "POST /v1/datasets"):
        for level in ("1", "3"):
            row = sweep[route][level]
            assert row["requests"] >= 3 and row["conn_err"] == row["cut"] == 0, (route, level, row)
            assert row["p99_ms"] >= row["p50_ms"] > 0
            # Uploads beyond MAX_CONCURRENT_UPLOADS may get a 503; reads are all answered.
            assert row["2xx"] == row["requests"] if route.startswith("GET") else row["2xx"] >= 1, (route, row)
    # The phantom worker never consumes: a score request is answered with an error or cut, never scored.
    assert sweep["POST /v1/score"]["3"]["2xx"] == 0
    assert report["under_score_load"]["direct (uvicorn)"]["GET /healthz"]["requests"] >= 1
    # Slow clients were held (up to the 1 s cap here) on the gateway itself.
    held = report["slow_clients"]["direct (uvicorn)"]["half the headers, then nothing"]["held_s"]
    assert 0 < held <= 1.5
    assert report["max_upload"]["direct (uvicorn)"]["bytes"] >= 50 * 1024
    assert report["memory"]["start"]["peak_rss_mib"] > 0
    # The markdown tables are printed.
    assert (
        "| via | route | concurrency | requests | 2xx | 4xx | 5xx | conn err | cut | p50 ms | p99 ms |"
        in finished.stdout
    )
    assert "peak RSS (VmHWM)" in finished.stdout
