"""arena_client against an httpx.MockTransport: retries honour Retry-After within their bounds, a retried submit
resends its Idempotency-Key, errors become one line and exit 2, a failed job exits 1, predict runs its whole path.

The gateway's real answers are covered by tests/integration/test_remote_client.py (the real stack through the proxy).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from arena_client.cli import main
from arena_client.client import ArenaClient, ArenaError, RetryPolicy, error_detail, retry_after_seconds
from shared.settings import REPO_ROOT

JOB_ID = "a" * 32
DATASET_ID = "d" * 32


class Recorder:
    """The requests a MockTransport saw, and the sleeps the client asked for."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            request.read()
            self.requests.append(request)
            return self.handler(request)

        return httpx.MockTransport(handle)

    def client(self, url: str = "http://gateway", *, api_key: str | None = "k", retry=RetryPolicy()) -> ArenaClient:
        return ArenaClient(url, api_key=api_key, retry=retry, transport=self.transport(), sleep=self.sleeps.append)

    def make_client(self, url: str, *, api_key: str | None, retry: RetryPolicy) -> ArenaClient:
        """What cli.main builds its client with."""
        self.url, self.api_key = url, api_key
        return self.client(url, api_key=api_key, retry=retry)


def answers(*responses: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)
    return lambda _request: queue.pop(0)


def created() -> httpx.Response:
    return httpx.Response(202, json={"job_id": JOB_ID, "kind": "predict", "state": "dispatched"})


def test_a_retried_submit_waits_its_retry_after_and_resends_one_idempotency_key():
    recorder = Recorder(
        answers(
            httpx.Response(503, headers={"Retry-After": "3"}, json={"detail": "the job queue is unavailable"}),
            httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "proxy limit"}),
            created(),
        )
    )
    assert recorder.client().submit("predict", {"dataset": DATASET_ID})["job_id"] == JOB_ID
    assert recorder.sleeps == [3.0, 1.0]
    keys = {request.headers["Idempotency-Key"] for request in recorder.requests}
    assert len(recorder.requests) == 3 and len(keys) == 1
    assert all(json.loads(request.content) == {"dataset": DATASET_ID} for request in recorder.requests)


def test_two_submissions_send_two_keys():
    recorder = Recorder(answers(created(), created()))
    client = recorder.client()
    client.submit("predict", {"dataset": DATASET_ID})
    client.submit("predict", {"dataset": DATASET_ID})
    first, second = (request.headers["Idempotency-Key"] for request in recorder.requests)
    assert first != second


def test_retries_stop_at_their_count():
    recorder = Recorder(lambda _request: httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "busy"}))
    with pytest.raises(ArenaError) as raised:
        recorder.client(retry=RetryPolicy(max_retries=3, max_wait_s=100)).job(JOB_ID)
    assert len(recorder.requests) == 4 and recorder.sleeps == [1.0, 1.0, 1.0]
    assert raised.value.status == 429 and "busy" in str(raised.value) and "4 tries" in str(raised.value)


def test_a_retry_after_past_the_wait_cap_ends_the_retries_without_sleeping_it():
    recorder = Recorder(
        answers(
            httpx.Response(503, headers={"Retry-After": "5"}, json={"detail": "uploads busy"}),
            httpx.Response(503, headers={"Retry-After": "60"}, json={"detail": "uploads busy"}),
        )
    )
    with pytest.raises(ArenaError, match="uploads busy"):
        recorder.client(retry=RetryPolicy(max_retries=10, max_wait_s=30)).job(JOB_ID)
    assert recorder.sleeps == [5.0]


def test_without_retry_after_the_client_backs_off():
    recorder = Recorder(answers(httpx.Response(502), httpx.Response(502), httpx.Response(200, json={"id": JOB_ID})))
    assert recorder.client().job(JOB_ID) == {"id": JOB_ID}
    assert recorder.sleeps == [1.0, 2.0]


def test_a_4xx_is_not_retried():
    recorder = Recorder(answers(httpx.Response(409, json={"detail": "adapter name 'x' is taken"})))
    with pytest.raises(ArenaError) as raised:
        recorder.client().submit("train", {})
    assert raised.value.status == 409 and raised.value.client_error and len(recorder.requests) == 1


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=12), usegmt=True), now=now) == 12.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=12), usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_error_detail_is_one_line_whatever_the_body():
    validation = httpx.Response(
        422,
        json={"detail": [{"loc": ["body", "dataset"], "msg": "String should match\npattern", "type": "x"}]},
    )
    assert error_detail(validation) == "dataset: String should match pattern"
    assert error_detail(httpx.Response(404, json={"detail": "job x not found"})) == "job x not found"
    assert error_detail(httpx.Response(500, text="<html>\n oops\n</html>")) == "<html> oops </html>"


def test_a_refused_request_exits_2_with_the_servers_reason_on_one_line(tmp_path):
    recorder = Recorder(answers(httpx.Response(422, json={"detail": "not a Kaggle arena CSV: row 2, column\nid"})))
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("id\n1\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["upload", str(csv_path)], environ={}, make_client=recorder.make_client, out=out, err=err)
    assert code == 2 and out.getvalue() == ""
    assert err.getvalue() == "arena remote upload: 422: not a Kaggle arena CSV: row 2, column id\n"


def test_a_missing_input_file_exits_2_before_any_request(tmp_path):
    recorder = Recorder(answers())
    err = io.StringIO()
    code = main(
        ["predict", "--input", str(tmp_path / "nope.csv")], environ={}, make_client=recorder.make_client, err=err
    )
    assert code == 2 and "is not a file" in err.getvalue() and recorder.requests == []


def job_record(state: str, done: int, total: int = 4, error: str | None = None) -> dict:
    return {
        "id": JOB_ID, "kind": "predict", "state": state, "progress": {"done": done, "total": total},
        "created_at": "2026-01-01T00:00:00Z", "error": error, "artifacts": ["submission.csv"],
    }  # fmt: skip


def test_wait_exits_1_on_a_failed_job_with_its_error():
    recorder = Recorder(
        answers(
            httpx.Response(200, json=job_record("running", 1)),
            httpx.Response(200, json=job_record("failed", 2, error="chunk 1 failed after 2 attempts")),
        )
    )
    err = io.StringIO()
    assert main(["wait", JOB_ID], environ={}, make_client=recorder.make_client, err=err) == 1
    assert "chunk 1 failed after 2 attempts" in err.getvalue()


def test_predict_uploads_submits_follows_progress_and_downloads(tmp_path):
    polls = iter([job_record("dispatched", 0), job_record("running", 2), job_record("succeeded", 4)])

    def gateway(request: httpx.Request) -> httpx.Response:
        route = (request.method, request.url.path)
        if route == ("POST", "/v1/datasets"):
            assert b'name="file"; filename="test.csv"' in request.content
            return httpx.Response(201, json={"id": DATASET_ID, "rows": 4})
        if route == ("POST", "/v1/jobs/predict"):
            assert json.loads(request.content) == {"dataset": DATASET_ID, "adapter": "mine"}
            return created()
        if route == ("GET", f"/v1/jobs/{JOB_ID}"):
            return httpx.Response(200, json=next(polls))
        if route == ("GET", f"/v1/jobs/{JOB_ID}/artifacts/submission.csv"):
            return httpx.Response(200, content=b"id,winner_model_a,winner_model_b,winner_tie\n")
        return httpx.Response(404, json={"detail": f"no route {route}"})

    recorder = Recorder(gateway)
    (tmp_path / "test.csv").write_text("id,prompt,response_a,response_b\n")
    output = tmp_path / "out" / "submission.csv"
    output.parent.mkdir()
    out, err = io.StringIO(), io.StringIO()
    argv = ["predict", "--input", str(tmp_path / "test.csv"), "--output", str(output), "--adapter", "mine"]
    environ = {"ARENA_API_KEY": "k"}
    assert main(argv, environ=environ, make_client=recorder.make_client, out=out, err=err) == 0
    assert out.getvalue() == f"{JOB_ID}\n"
    assert output.read_bytes() == b"id,winner_model_a,winner_model_b,winner_tie\n"
    assert not output.with_name("submission.csv.part").exists()
    assert f"job {JOB_ID}: [{'#' * 15}{'.' * 15}] 2/4 running" in err.getvalue()
    assert f"[{'#' * 30}] 4/4 succeeded" in err.getvalue()
    assert all(request.headers["Authorization"] == "Bearer k" for request in recorder.requests)


def test_a_local_gateway_gets_make_ups_key_and_a_remote_one_does_not(tmp_path, monkeypatch):
    (tmp_path / "api_key").write_text("from-make-up\n")
    monkeypatch.setenv("RUN_DIR", str(tmp_path))
    recorder = Recorder(lambda _request: httpx.Response(200, json=[]))
    assert main(["jobs"], environ={}, make_client=recorder.make_client) == 0
    assert (recorder.url, recorder.api_key) == ("http://127.0.0.1:8000", "from-make-up")
    main(["jobs"], environ={"ARENA_URL": "https://arena.example.org"}, make_client=recorder.make_client)
    assert recorder.api_key is None
    main(["--api-key", "flag", "jobs"], environ={"ARENA_API_KEY": "env"}, make_client=recorder.make_client)
    assert recorder.api_key == "flag"


def test_jobs_follows_the_cursor_through_every_page():
    pages = {
        None: (httpx.Response(200, json=[job_record("running", 1)], headers={"X-Next-Cursor": "c1"})),
        "c1": httpx.Response(200, json=[job_record("succeeded", 4)]),
    }
    recorder = Recorder(lambda request: pages[request.url.params.get("after")])
    out = io.StringIO()
    assert main(["jobs", "--state", "running", "--json"], environ={}, make_client=recorder.make_client, out=out) == 0
    assert [json.loads(line)["state"] for line in out.getvalue().splitlines()] == ["running", "succeeded"]
    assert all(request.url.params["state"] == "running" for request in recorder.requests)


def test_the_client_imports_nothing_of_the_project_or_torch():
    code = "import sys, arena_client.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'api', "
    code += "'shared', 'workers', 'fastapi', 'pydantic'}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_worker_environment_runs_it_too():
    worker_python = REPO_ROOT / ".venv-worker" / "bin" / "python"
    if not worker_python.exists():
        pytest.fail(f"the worker environment is missing ({worker_python}); run `make setup`")
    result = subprocess.run(
        [str(worker_python), "-m", "arena_client", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and "predict" in result.stdout, result.stderr


def test_scripts_arena_remote_dispatches_to_the_client():
    result = subprocess.run(
        [str(Path(REPO_ROOT) / "scripts" / "arena"), "remote", "--max-retries", "0", "download", JOB_ID, "x.csv"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "ARENA_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert result.returncode == 1 and "cannot connect to http://127.0.0.1:9" in result.stderr, result.stderr


def test_train_sends_a_text_only_fit_and_passes_a_422_through(tmp_path):
    bodies: list[dict] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/datasets":
            return httpx.Response(201, json={"id": DATASET_ID, "rows": 2})
        bodies.append(json.loads(request.content))
        return httpx.Response(422, json={"detail": "text_only: not supported by this server"})

    recorder = Recorder(gateway)
    (tmp_path / "labelled.csv").write_text("id\n")
    err = io.StringIO()
    argv = ["train", "--text-only", "--input", str(tmp_path / "labelled.csv"), "--adapter-name", "mine"]
    code = main([*argv, "--include-shipped-data"], environ={}, make_client=recorder.make_client, err=err)
    assert code == 2 and err.getvalue().endswith("arena remote train: 422: text_only: not supported by this server\n")
    assert bodies == [{"dataset": DATASET_ID, "text_only": True, "adapter_name": "mine", "include_shipped_data": True}]
    assert main([*argv, "--no-shipped-data"], environ={}, make_client=recorder.make_client, err=err) == 2
    assert bodies[-1]["include_shipped_data"] is False
    assert main(argv, environ={}, make_client=recorder.make_client, err=err) == 2
    assert "include_shipped_data" not in bodies[-1]  # the server's default
