"""`scripts/arena remote` as a user runs it, a subprocess against the real stack through the proxy: nginx with the
project's config in front of a real gateway process, a real Celery worker with the default predictor.

predict uploads, submits once, shows progress, downloads submission.csv; jobs lists the job; a bad file exits 2
with the server's reason on one line; delete removes the job, and waiting on it then is a 404 (exit 2).

The stack runs with LOG_FORMAT=json: the gateway's and the worker's logs are read back as JSON lines, the job's
lines naming its job, chunk, tenant and worker."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest

from shared.settings import REPO_ROOT
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY
from tests.integration.conftest import DEFAULT_PREDICTOR, make_stack
from tests.integration.nginx import gateway_behind_proxy

pytestmark = [pytest.mark.integration, pytest.mark.model]

ARENA = REPO_ROOT / "scripts" / "arena"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not (DEFAULT_PREDICTOR / "text_model.json").is_file():
        pytest.fail(f"the default predictor is missing at {DEFAULT_PREDICTOR}; run `make setup`")
    stack = make_stack(tmp_path_factory, engine="transformers", worker_env={"LOG_FORMAT": "json"})
    try:
        stack.start_worker("cpu")
        settings = stack.settings
        env = {
            "API_KEY": API_KEY, "SHARED_DIR": str(settings.SHARED_DIR), "REDIS_URL": settings.REDIS_URL,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "INSPECT_TIMEOUT_S": "0.5", "LOG_FORMAT": "json",
        }  # fmt: skip
        with gateway_behind_proxy(env, stack.root) as url:
            yield stack, url
    finally:
        stack.stop()


def remote(url: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "ARENA_URL": url, "ARENA_API_KEY": API_KEY}
    return subprocess.run(
        [str(ARENA), "remote", "--poll", "0.3", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_remote_predict_through_the_proxy_then_list_and_delete(served, tmp_path):
    stack, url = served
    (tmp_path / "test.csv").write_bytes(arena_csv(3, labelled=False))
    predicted = remote(url, "predict", "--input", "test.csv", "--output", "submission.csv", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    job_id = predicted.stdout.strip()
    assert f"job {job_id}: [{'#' * 30}] 3/3 succeeded" in predicted.stderr
    with open(tmp_path / "submission.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ["1000", "1001", "1002"]
    assert all(abs(sum(float(row[label]) for label in list(row)[1:]) - 1) < 1e-5 for row in rows)
    jobs = stack.client.get("/v1/jobs", params={"kind": "predict"}).json()
    assert [job["id"] for job in jobs] == [job_id]  # submitted once

    listed = remote(url, "jobs", "--kind", "predict")
    assert listed.returncode == 0 and listed.stdout.startswith(f"{job_id}  predict     succeeded  3/3"), listed

    (tmp_path / "bad.csv").write_bytes(b"id,prompt\n1,hello\n")
    refused = remote(url, "predict", "--input", "bad.csv", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("arena remote predict: 422: not a Kaggle arena CSV"), line

    assert remote(url, "delete", job_id).returncode == 0
    gone = remote(url, "wait", job_id)
    assert gone.returncode == 2 and f"404: no job '{job_id}'" in gone.stderr, gone.stderr


def json_lines(path) -> list[dict]:
    """Every line of a log, each of which must be one JSON object."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line[:300]}")
    return entries


def test_json_logs_name_the_job_chunk_tenant_and_worker(served, tmp_path):
    stack, url = served
    (tmp_path / "test.csv").write_bytes(arena_csv(2, labelled=False))
    predicted = remote(url, "predict", "--input", "test.csv", "--output", "submission.csv", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    job_id = predicted.stdout.strip()

    [worker] = stack.workers
    job_lines = [entry for entry in json_lines(stack.root / "worker-cpu.log") if entry["job_id"] == job_id]
    assert job_lines, "no line of the worker's log names the job"
    assert all(entry["tenant"] == "admin" and entry["worker"] == worker for entry in job_lines), job_lines
    assert {entry["chunk"] for entry in job_lines} == {0}

    gateway = json_lines(stack.root / "gateway.log")
    created = [entry for entry in gateway if entry["message"].startswith(f"job {job_id} (predict) created")]
    assert [entry["tenant"] for entry in created] == ["admin"]
    polls = [entry for entry in gateway if entry.get("path") == f"/v1/jobs/{job_id}" and entry.get("status") == 200]
    assert polls and all(entry["tenant"] == "admin" for entry in polls)
