"""Faults on the worker side, on real Redis with real workers running the real small model (transformers engine):
a job past its time limit is stopped between batches; a worker killed mid-chunk (kill -9) loses nothing: the
sweeper re-queues its chunk on the live worker within seconds (not after Redis' visibility timeout, hours by
default), which judges it again from its start, and the submission equals an undisturbed run's, byte for
byte; a job the gateway recorded but never sent (killed in between) and a chunk sent to a queue nobody
consumes both finish.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from api.dispatch import new_predict_record, send_predict_job
from shared.job_store import JobStore
from shared.schemas import PredictJobRequest
from shared.settings import REPO_ROOT
from shared.storage import job_output_dir, new_id
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Redis' own redelivery of a dead worker's task stays at its default (JOB_TIME_LIMIT_S + 1 h): recovery here
    # must come from the sweeper.
    stack = make_stack(tmp_path_factory, engine="transformers")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def finished(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def test_a_job_past_its_time_limit_is_stopped_and_the_worker_takes_the_next_job(stack):
    dataset = stack.upload(arena_csv(8, labelled=False))
    job_id = stack.predict(dataset["id"], time_limit_s=1)
    job = stack.wait_finished(job_id, timeout=180)
    assert job["state"] == "failed", job
    assert "longer than its time limit of 1s" in job["error"] and "time_limit_s" in job["error"]
    assert job["chunks"][0]["state"] == "failed" and job["progress"]["done"] < 8
    assert (
        job["artifacts"] == [] and not (job_output_dir(stack.settings.SHARED_DIR, job_id) / "submission.csv").exists()
    )

    after = stack.wait_finished(stack.predict(stack.upload(arena_csv(2))["id"]))
    assert after["state"] == "succeeded", after
    assert after["chunks"][0]["worker"] == job["chunks"][0]["worker"]  # the same (only) worker, free again


def test_score_waits_for_a_busy_worker_instead_of_answering_503(stack):
    """A solo-pool worker busy with a chunk cannot answer broadcasts; the gateway must not take it for gone."""
    dataset = stack.upload(arena_csv(8, labelled=False))
    submitted = time.monotonic()
    job_id = stack.predict(dataset["id"])
    stack.wait(job_id, until=lambda job: job["progress"]["done"] >= 1)
    time.sleep(max(0.0, submitted + 5.5 - time.monotonic()))  # past the gateway's 5 s cache of worker answers
    pair = {"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}
    response = stack.client.post("/v1/score", json={"pairs": [pair], "tta": False, "raw": True})
    assert response.status_code == 200, response.text
    assert stack.wait_finished(job_id)["state"] == "succeeded"


def test_a_worker_killed_mid_chunk_loses_nothing_and_does_nothing_twice(stack):
    dataset = stack.upload(arena_csv(6, labelled=False))
    undisturbed_id = stack.predict(dataset["id"])  # on the warm worker, before the second one exists
    undisturbed = stack.wait_finished(undisturbed_id)
    assert undisturbed["state"] == "succeeded", undisturbed

    stack.start_worker("cpu")  # a second live worker on the same queue
    job_id = stack.predict(dataset["id"])
    running = stack.wait(
        job_id, until=lambda job: job["chunks"][0]["state"] == "running" and job["progress"]["done"] >= 2
    )  # well inside the chunk
    victim = running["chunks"][0]["worker"]
    os.kill(stack.workers[victim].pid, signal.SIGKILL)  # mid-chunk: no ack, no result, no clean-up
    stack.workers[victim].wait()
    assert not finished(stack.client.get(f"/v1/jobs/{job_id}").json())

    killed_at = time.monotonic()
    job = stack.wait_finished(job_id, timeout=120)
    assert job["state"] == "succeeded", job
    [chunk] = job["chunks"]
    assert chunk["worker"] != victim and chunk["attempts"] == 2  # re-queued to the live worker
    assert time.monotonic() - killed_at < 100  # seconds after the kill, not the visibility timeout's hours
    assert job["progress"] == {"done": 6, "total": 6}  # rows judged before the kill are not counted twice
    metrics = json.loads(stack.client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json").content)
    assert [summary["chunk"] for summary in metrics["chunks"]] == [0]  # assembled exactly once, from one chunk
    assert list(metrics["workers"]) == [chunk["worker"]] and metrics["workers"][chunk["worker"]]["rows"] == 6
    assert len(json.loads((stack.settings.SHARED_DIR / "jobs" / f"{job_id}.json").read_text())["task_ids"]) == 2

    files = [stack.client.get(f"/v1/jobs/{one}/artifacts/submission.csv").content for one in (undisturbed_id, job_id)]
    assert files[0] == files[1] and files[0].count(b"\n") == 7

    # The workers never saw the API key; neither their logs nor the job records hold it.
    for path in [*stack.root.glob("worker-*.log"), *(stack.settings.SHARED_DIR / "jobs").glob("*.json")]:
        assert API_KEY not in path.read_text(errors="replace"), path


def test_a_job_the_gateway_recorded_but_never_sent_is_sent_by_the_sweeper(stack):
    """What a gateway killed between writing the record and sending the tasks leaves behind: its own steps, up to
    the send, then nothing."""
    dataset = stack.upload(arena_csv(3, labelled=False))
    params = PredictJobRequest(dataset=dataset["id"], raw=True).model_dump()
    record = new_predict_record(new_id(), params=params, rows=3, queue="cpu", chunk_rows=128)
    JobStore(stack.settings.SHARED_DIR).create(record)
    assert stack.client.get(f"/v1/jobs/{record.id}").json()["state"] == "queued"

    job = stack.wait_finished(record.id, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["chunks"][0]["attempts"] == 1 and job["progress"] == {"done": 3, "total": 3}


def test_a_chunk_sent_to_a_queue_nobody_consumes_is_moved_to_a_live_one(stack):
    """A gateway that routed by stale knowledge (the GPU workers left): the chunk waits on gpu until the sweeper
    sends it, under a fresh task id, where a live worker listens."""
    dataset = stack.upload(arena_csv(2, labelled=False))
    params = PredictJobRequest(dataset=dataset["id"], raw=True).model_dump()
    record = new_predict_record(new_id(), params=params, rows=2, queue="gpu", chunk_rows=128)
    store = JobStore(stack.settings.SHARED_DIR)
    store.create(record)
    store.mark_sent(record.id, task_ids=send_predict_job(stack.client.app.state.celery, record))

    job = stack.wait_finished(record.id, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["chunks"][0]["queue"] == "cpu" and job["chunks"][0]["task_id"] != record.chunks[0].task_id


def test_a_task_the_broker_lost_is_sent_again_once_its_worker_sits_idle(stack):
    """What a Redis without persistence leaves after a restart: the record says sent, the queue forgot the task.
    The idle worker's announcements tell the sweeper, which sends the task again under its id."""
    dataset = stack.upload(arena_csv(2, labelled=False))
    params = PredictJobRequest(dataset=dataset["id"], raw=True).model_dump()
    record = new_predict_record(new_id(), params=params, rows=2, queue="cpu", chunk_rows=128)
    store = JobStore(stack.settings.SHARED_DIR)
    store.create(record)
    store.mark_sent(record.id, task_ids=[chunk.task_id for chunk in record.chunks])  # ... and never sent

    job = stack.wait_finished(record.id, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["chunks"][0]["task_id"] == record.chunks[0].task_id and job["chunks"][0]["attempts"] == 1


def test_a_gateway_killed_between_the_record_and_the_send_leaves_a_job_that_still_finishes(stack):
    """A real gateway process (uvicorn) that dies right after writing the record, before sending the tasks; the
    client's retry with the same Idempotency-Key, on a fresh gateway, gets that job, and the sweeper sends it."""
    dataset = stack.upload(arena_csv(3, labelled=False))
    settings = stack.settings
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ, "PYTHONPATH": f"{Path(__file__).parent / 'gateway_dies_before_send'}:{REPO_ROOT}",
        "SHARED_DIR": str(settings.SHARED_DIR), "REDIS_URL": settings.REDIS_URL,
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "API_KEY": API_KEY, "INSPECT_TIMEOUT_S": "0.5",
    }  # fmt: skip
    gateway = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    key = {"Idempotency-Key": str(uuid.uuid4()), "Authorization": f"Bearer {API_KEY}"}
    body = {"dataset": dataset["id"], "raw": True}
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with pytest.raises(httpx.HTTPError):  # the gateway dies mid-request: no answer
            httpx.post(f"http://127.0.0.1:{port}/v1/jobs/predict", json=body, headers=key, timeout=30)
        assert gateway.wait(timeout=30) == 137
    finally:
        if gateway.poll() is None:
            gateway.kill()
    [record] = [path for path in (settings.SHARED_DIR / "jobs").glob("*.json")
                if json.loads(path.read_text())["params"].get("dataset") == dataset["id"]]  # fmt: skip
    assert json.loads(record.read_text())["state"] == "queued"  # recorded, never sent

    retried = stack.client.post("/v1/jobs/predict", json=body, headers=key)  # the client retries, same key
    assert retried.status_code == 200 and retried.headers["Idempotent-Replayed"] == "true"
    job = stack.wait_finished(retried.json()["job_id"], timeout=120)
    assert job["id"] == record.stem and job["state"] == "succeeded", job
    assert job["chunks"][0]["attempts"] == 1 and job["progress"] == {"done": 3, "total": 3}


def test_a_batch_stuck_past_the_time_limit_is_stopped_hard_and_the_worker_exits_for_a_restart(stack):
    """The time limit is checked between batches; one 16-pair batch on the CPU outlasts a 1 s limit by more than
    HARD_STOP_GRACE_S, so the watchdog fails the job with the reason and the worker exits (75) mid-batch.
    Last in this module: it adds a gpu.7 worker, which jobs would prefer over cpu."""
    name = stack.start_worker("gpu.7", env={"JUDGE_CHUNK_PAIRS": "16", "HARD_STOP_GRACE_S": "1"})
    dataset = stack.upload(arena_csv(16, labelled=False))
    warm = stack.predict(stack.upload(arena_csv(1, labelled=False))["id"])  # loads the judge: not in the limit
    assert stack.wait_finished(warm)["chunks"][0]["worker"] == name
    job_id = stack.predict(dataset["id"], time_limit_s=1)

    job = stack.wait_finished(job_id, timeout=120)
    assert job["state"] == "failed" and "stopped hard" in job["error"] and "JUDGE_CHUNK_PAIRS" in job["error"], job
    assert job["chunks"][0]["state"] == "failed" and job["progress"]["done"] == 0  # inside the first batch
    assert stack.workers[name].wait(timeout=30) == 75  # exited for its supervisor to restart it
