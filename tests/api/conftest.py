"""The real gateway app (TestClient) on a temporary SHARED_DIR and the real Redis, isolated by a key prefix.

No worker runs here: jobs stay queued; tests/integration/ covers workers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from shared.settings import Settings

API_KEY = "test-key-" + uuid.uuid4().hex
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def redis_or_fail(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"these tests need Redis at {url} ({exc}); start redis-server or set TEST_REDIS_URL")
    return client


@pytest.fixture
def redis_prefix():
    """A fresh key prefix in the test database; every key under it is deleted afterwards."""
    client = redis_or_fail(TEST_REDIS_URL)
    prefix = f"arena-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


@pytest.fixture
def settings(tmp_path: Path, redis_prefix: str) -> Settings:
    # The gateway only checks that the model folder looks like one; no worker loads it here.
    model_dir = tmp_path / "shared" / "models" / "SmolLM2-135M-Instruct"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    # The default predictor a request without adapter, calibration or raw gets (checked, not loaded, here).
    predictor_dir = tmp_path / "shared" / "models" / "default"
    predictor_dir.mkdir()
    (predictor_dir / "text_model.json").write_text("{}")
    return Settings(
        SHARED_DIR=tmp_path / "shared",
        API_KEY=API_KEY,
        REDIS_URL=TEST_REDIS_URL,
        REDIS_KEY_PREFIX=redis_prefix,
        INSPECT_TIMEOUT_S=0.3,
        MAX_UPLOAD_BYTES=64 * 1024,
        SCORE_MAX_PAIRS=2,
        SCORE_TIMEOUT_S=2,
        _env_file=None,
    )


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client


@pytest.fixture
def anonymous(settings: Settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with (size, mtime_ns): to prove a rejected request changed nothing."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".locks" not in path.parts
    }
