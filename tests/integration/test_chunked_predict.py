"""Scale-out on real Redis with real workers: one predict job's chunks wait on the shared cpu queue and every worker
pulls the next one when it is free. Three workers, started under two host names (standing in for two machines):
- they all take chunks, a slowed one (CHUNK_EXTRA_DELAY_S) fewer than the fast ones;
- the submission is byte-identical to a one-worker run's;
- a worker killed mid-chunk loses nothing and duplicates nothing;
- a worker started while a job runs takes chunks of it;
- a second worker under a live one's name, and one whose SHARED_DIR is not the shared one, refuse to start.

The default predictor (the calibrated text model) judges here: it loads in seconds, so the chunks' timing is the
delay the test sets, not the model.
"""

import io
import json
import os
import signal
import time

import pandas as pd
import pytest

from tests.api.arena_rows import arena_csv
from tests.integration.conftest import DEFAULT_PREDICTOR, make_stack, tail

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]

CHUNK_ROWS = 2
FAST = {"CHUNK_EXTRA_DELAY_S": "0.3"}
SLOW = {"CHUNK_EXTRA_DELAY_S": "4"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not (DEFAULT_PREDICTOR / "text_model.json").is_file():
        pytest.fail(f"the default predictor is missing at {DEFAULT_PREDICTOR}; run `make setup`")
    stack = make_stack(tmp_path_factory, engine="transformers", gateway_settings={"PREDICT_CHUNK_ROWS": CHUNK_ROWS})
    yield stack
    stack.stop()


def predict(stack, dataset_id: str) -> str:
    """A plain predict job: the default predictor."""
    response = stack.client.post("/v1/jobs/predict", json={"dataset": dataset_id})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def submission(stack, job_id: str) -> bytes:
    return stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").content


def chunks_by_worker(job: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for chunk in job["chunks"]:
        counts[chunk["worker"]] = counts.get(chunk["worker"], 0) + 1
    return counts


def assert_complete_once(stack, job: dict, rows: int) -> None:
    """Every row once, in the dataset's order; every chunk judged, published and assembled once."""
    assert job["state"] == "succeeded", job
    frame = pd.read_csv(io.BytesIO(submission(stack, job["id"])), dtype={"id": str})
    assert frame["id"].tolist() == [str(1000 + row) for row in range(rows)]
    assert job["progress"] == {"done": rows, "total": rows}
    assert [chunk["state"] for chunk in job["chunks"]] == ["succeeded"] * len(job["chunks"])
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").content)
    assert [summary["chunk"] for summary in metrics["chunks"]] == list(range(len(job["chunks"])))
    assert sum(share["rows"] for share in metrics["workers"].values()) == rows
    published = sorted((stack.settings.SHARED_DIR / "submissions" / job["id"] / "chunks").glob("chunk-*.npz"))
    assert len(published) == len(job["chunks"])


def test_workers_on_two_hosts_pull_the_chunks_of_one_job(stack):
    rows = 36
    dataset = stack.upload(arena_csv(rows))
    first = stack.start_worker("cpu", host="host-a", env=FAST)
    one_worker = stack.wait_finished(predict(stack, dataset["id"]), timeout=180)
    assert_complete_once(stack, one_worker, rows)
    assert len(one_worker["chunks"]) == rows // CHUNK_ROWS and set(chunks_by_worker(one_worker)) == {first}

    second = stack.start_worker("cpu", host="host-a", env=FAST)
    slow = stack.start_worker("cpu", host="host-b", env=SLOW)
    job = stack.wait_finished(predict(stack, dataset["id"]), timeout=180)
    assert_complete_once(stack, job, rows)
    counts = chunks_by_worker(job)
    assert set(counts) == {first, second, slow}, counts  # every worker, on both hosts, pulled chunks
    assert counts[slow] < counts[first] and counts[slow] < counts[second], counts  # the slow one took fewer
    assert {chunk["queue"] for chunk in job["chunks"]} == {"cpu"}
    assert submission(stack, job["id"]) == submission(stack, one_worker["id"])  # byte for byte


def test_a_worker_killed_mid_chunk_loses_and_duplicates_nothing(stack):
    rows = 24
    dataset = stack.upload(arena_csv(rows))
    victim = stack.start_worker("cpu", host="host-b", env={"CHUNK_EXTRA_DELAY_S": "30"})  # judged, not published
    job_id = predict(stack, dataset["id"])
    stack.wait(job_id, until=lambda job: any(c["worker"] == victim and c["state"] == "running" for c in job["chunks"]))
    time.sleep(1)  # inside its delay: the chunk is judged and not yet published
    os.kill(stack.workers[victim].pid, signal.SIGKILL)
    stack.workers[victim].wait()

    job = stack.wait_finished(job_id, timeout=180)
    assert_complete_once(stack, job, rows)
    [requeued] = [chunk for chunk in job["chunks"] if chunk["attempts"] == 2]  # the victim's chunk, judged again
    assert requeued["worker"] != victim and victim not in chunks_by_worker(job)
    record = json.loads((stack.settings.SHARED_DIR / "jobs" / f"{job_id}.json").read_text())
    assert len(record["task_ids"]) == len(job["chunks"]) + 1  # one re-queue, nothing sent twice otherwise


def test_a_worker_started_while_a_job_runs_takes_chunks_of_it(stack):
    for name in list(stack.workers):  # one slow worker left: the job outlasts the new worker's start
        if stack.workers[name].poll() is None:
            os.killpg(stack.workers[name].pid, signal.SIGTERM)
            stack.workers[name].wait(timeout=60)
    stack.start_worker("cpu", host="host-a", env={"CHUNK_EXTRA_DELAY_S": "2"})
    rows = 40  # 20 chunks of 2 s or more: time for the late worker to start even on a slow machine
    job_id = predict(stack, stack.upload(arena_csv(rows))["id"])
    stack.wait(job_id, until=lambda job: job["progress"]["done"] >= CHUNK_ROWS)
    late = stack.start_worker("cpu", host="host-b", env=FAST)
    job = stack.wait_finished(job_id, timeout=240)
    assert_complete_once(stack, job, rows)
    assert chunks_by_worker(job).get(late, 0) >= 1, chunks_by_worker(job)


def start_expecting_refusal(stack, name: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """A worker that should refuse to start: its exit code and its log."""
    process, log_path = stack.spawn_worker("cpu", name=name, env=env)
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return code, tail(log_path)


def test_a_second_worker_under_a_live_name_refuses_to_start(stack):
    live = next(name for name, process in stack.workers.items() if process.poll() is None)
    code, log = start_expecting_refusal(stack, live)
    assert code != 0 and f"another worker is running under the name {live}" in log, log
    assert stack.client.app.state.celery.control.ping(destination=[live], timeout=2)  # the live one carries on


def test_a_worker_on_other_storage_than_the_shared_one_refuses_to_start(stack, tmp_path):
    code, log = start_expecting_refusal(stack, "stray@host-c", env={"SHARED_DIR": str(tmp_path / "local")})
    assert code != 0 and "is not the storage the other workers use" in log and "docs/scale-out.md" in log, log


def test_flower_lists_the_workers_and_tasks(stack):
    """Flower (from the gateway environment) sees the workers over the same broker, and the tasks they ran."""
    import socket
    import subprocess
    import sys

    import httpx

    live = {name for name, process in stack.workers.items() if process.poll() is None}
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
        while time.monotonic() < deadline and not live <= set(workers):
            time.sleep(1)
            try:
                workers = httpx.get(f"http://127.0.0.1:{port}/api/workers", params={"refresh": 1}, timeout=10).json()
            except httpx.HTTPError:
                continue
        assert live <= set(workers)
        stack.wait_finished(predict(stack, stack.upload(arena_csv(2))["id"]))
        time.sleep(2)
        tasks = httpx.get(f"http://127.0.0.1:{port}/api/tasks", timeout=10).json()
        assert "arena.predict.chunk" in {task["name"] for task in tasks.values()}  # the last chunk assembles
    finally:
        flower.terminate()
        flower.wait(timeout=30)
