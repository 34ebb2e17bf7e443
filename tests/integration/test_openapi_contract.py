"""The OpenAPI document holds (issue 33, item 6): schemathesis (`st run --checks all`) against a real gateway process
behind nginx with the project's config, with zero failures.

Every operation is tested, none excluded; no worker runs, so jobs only queue (nothing starts real work) and the two
operations that need a worker answer their declared 503 (tests/integration/schemathesis.toml). positive_data_acceptance
is skipped: a schema-valid upload can still be a bad CSV (422). The proxy's per-address rates are raised for this
client, which sends some 1,700 requests in about 20 s; its other limits stay the defaults. A fixed seed and 25
examples per operation keep the run the same and short; the JSON report lands in the test's tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.api.conftest import API_KEY, TEST_REDIS_URL, redis_or_fail
from tests.integration.nginx import gateway_behind_proxy

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES_PER_OPERATION = 25
SEED = 33


def test_schemathesis_finds_no_failure_through_the_proxy(tmp_path, monkeypatch):
    redis = redis_or_fail(TEST_REDIS_URL)
    prefix = f"arena-test-{uuid.uuid4().hex[:12]}:"
    shared = tmp_path / "shared"
    # The gateway checks that these look like a model and a predictor; nothing loads them.
    (shared / "models" / "SmolLM2-135M-Instruct").mkdir(parents=True)
    (shared / "models" / "SmolLM2-135M-Instruct" / "config.json").write_text("{}")
    (shared / "models" / "default").mkdir()
    (shared / "models" / "default" / "text_model.json").write_text("{}")
    env = {
        "API_KEY": API_KEY, "SHARED_DIR": str(shared), "REDIS_URL": TEST_REDIS_URL, "REDIS_KEY_PREFIX": prefix,
        "INSPECT_TIMEOUT_S": "0.3",
    }  # fmt: skip
    monkeypatch.setenv("PROXY_RATE_PER_CLIENT", "1000")  # read by compose/proxy-conf.sh
    monkeypatch.setenv("PROXY_POST_RATE_PER_CLIENT", "1000")
    report = tmp_path / "schemathesis.json"
    try:
        with gateway_behind_proxy(env, tmp_path) as url:
            command = [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color", "run",
                f"{url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                # Both ways of sending the key: schemathesis fills the scheme it does not get with a made-up value.
                "-H", f"Authorization: Bearer {API_KEY}", "-H", f"X-API-Key: {API_KEY}",
                "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED), "--request-timeout", "10",
                "--report", "json", "--report-json-path", str(report),
            ]  # fmt: skip
            # In tmp_path: schemathesis keeps a .schemathesis/ folder (replay data) in its working directory.
            run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            redis.delete(key)
    output = run.stdout[-12000:] + run.stderr[-3000:]
    assert report.is_file(), output
    summary = json.loads(report.read_text())
    operations, cases = summary["operations"], summary["test_cases"]
    print(f"schemathesis: {operations['tested']} operations, {cases['generated']} cases,"
          f" {cases['unique_failures']} failures, {summary['running_time']:.1f} s")  # fmt: skip
    assert run.returncode == 0 and summary["failures"] == [] and summary["errors"] == [], output
    assert operations["tested"] == operations["total"] and operations["skipped"] == 0, operations
    assert cases["generated"] >= 10 * operations["tested"], cases  # it did send requests, not just load the schema
