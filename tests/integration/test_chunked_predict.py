"""Two CPU workers as gpu.0/gpu.1 stand-ins split one predict job; the assembled file equals a one-worker run.

Uses the transformers engine (starts in seconds); test_predict_flow.py runs the default vLLM engine.
"""

import io

import numpy as np
import pandas as pd
import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="transformers")
    yield stack
    stack.stop()


def test_two_workers_split_a_job_and_match_one_worker(stack):
    dataset = stack.upload(arena_csv(4))

    stack.start_worker("gpu.0")
    single_id = stack.predict(dataset["id"])
    single = stack.wait_finished(single_id)
    assert single["state"] == "succeeded", single
    assert [(shard["queue"], shard["start"], shard["stop"]) for shard in single["shards"]] == [("gpu.0", 0, 4)]

    stack.start_worker("gpu.1")
    sharded_id = stack.predict(dataset["id"])
    sharded = stack.wait_finished(sharded_id)
    assert sharded["state"] == "succeeded", sharded
    assert [(shard["queue"], shard["start"], shard["stop"]) for shard in sharded["shards"]] == [
        ("gpu.0", 0, 2),
        ("gpu.1", 2, 4),
    ]
    assert len({shard["worker"] for shard in sharded["shards"]}) == 2
    assert sharded["assembler"] in {shard["worker"] for shard in sharded["shards"]}  # the shard that finished last
    assert sharded["progress"] == {"done": 4, "total": 4}

    files = [
        stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").content for job_id in (single_id, sharded_id)
    ]
    frames = [pd.read_csv(io.BytesIO(content), dtype={"id": str}) for content in files]
    assert frames[0]["id"].tolist() == frames[1]["id"].tolist() == [str(1000 + row) for row in range(4)]
    # The judge is deterministic per row (greedy log-probs, one prefix at a time in transformers), so the
    # files should be byte-identical; allow float noise in the last printed digit all the same.
    columns = ["winner_model_a", "winner_model_b", "winner_tie"]
    np.testing.assert_allclose(frames[0][columns].to_numpy(), frames[1][columns].to_numpy(), atol=2e-6)
    print(f"sharded submission byte-identical to the single-worker one: {files[0] == files[1]}")


def test_flower_lists_the_workers_and_tasks(stack):
    """Flower (from the gateway environment) sees the workers over the same broker, and the tasks they ran."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, REDIS_URL=stack.settings.REDIS_URL, REDIS_KEY_PREFIX=stack.prefix,
               FLOWER_UNAUTHENTICATED_API="true")  # fmt: skip
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "shared.celery_client", "flower", "--address=127.0.0.1",
         f"--port={port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        workers: dict = {}
        while time.monotonic() < deadline and len(workers) < len(stack.workers):
            time.sleep(1)
            try:
                workers = httpx.get(f"http://127.0.0.1:{port}/api/workers", params={"refresh": 1}, timeout=10).json()
            except httpx.HTTPError:
                continue
        assert set(workers) == set(stack.workers)
        stack.wait_finished(stack.predict(stack.upload(arena_csv(2))["id"]))
        time.sleep(2)
        tasks = httpx.get(f"http://127.0.0.1:{port}/api/tasks", timeout=10).json()
        assert "arena.predict.shard" in {task["name"] for task in tasks.values()}  # the last shard assembles
    finally:
        flower.terminate()
        flower.wait(timeout=30)
