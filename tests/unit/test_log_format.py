"""LOG_FORMAT=json (shared/log_format.py): one JSON object per line with the job fields, and a line logged inside a
JobRun names its job, chunk, tenant and worker."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared.job_store import JobStore
from shared.log_format import JOB_FIELDS, JsonFormatter, log_context, set_process_log_fields, use_log_format
from shared.schemas import ChunkRecord, JobRecord
from shared.settings import Settings
from workers.jobs.run import JobCancelledError, JobRun


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own (outside the registry, where pytest adds its capture handlers) writing through the JSON
    formatter into a buffer."""
    buffer = io.StringIO()
    logger = logging.Logger("tests.log_format", logging.INFO)
    logger.addHandler(logging.StreamHandler(buffer))
    use_log_format("json", (logger,))
    return logger, buffer


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_its_fields(captured):
    logger, buffer = captured
    logger.warning("two\nlines of %s", "message")
    [entry] = lines(buffer)
    assert buffer.getvalue().count("\n") == 1
    assert entry["message"] == "two\nlines of message"
    assert (entry["level"], entry["logger"]) == ("WARNING", "tests.log_format")
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert {name: entry[name] for name in JOB_FIELDS} == dict.fromkeys(JOB_FIELDS)  # null outside a job


def test_an_exception_is_one_field_of_one_line(captured):
    logger, buffer = captured
    try:
        raise ValueError("bad cell\nin row 3")
    except ValueError:
        logger.exception("the chunk failed")
    [entry] = lines(buffer)
    assert buffer.getvalue().count("\n") == 1
    assert entry["message"] == "the chunk failed"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: bad cell\nin row 3")


def test_context_fields_nest_and_end_with_their_block(captured):
    logger, buffer = captured
    with log_context(job_id="j1", tenant="team-a"):
        with log_context(chunk=2):
            logger.info("inner")
        logger.info("outer", extra={"tenant": "given"})
    logger.info("after")
    inner, outer, after = lines(buffer)
    assert (inner["job_id"], inner["chunk"], inner["tenant"]) == ("j1", 2, "team-a")
    assert (outer["chunk"], outer["tenant"]) == (None, "given")  # `extra` wins over the context
    assert after["job_id"] is None


def test_uvicorns_access_line_gets_its_parts_as_fields(captured):
    logger, buffer = captured
    args = ("1.2.3.4:5", "GET", "/v1/jobs", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == '1.2.3.4:5 - "GET /v1/jobs HTTP/1.1" 200'
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/v1/jobs", 200)


def test_text_leaves_the_handlers_alone(captured):
    logger, _buffer = captured
    [handler] = logger.handlers
    plain = logging.Formatter("%(message)s")
    handler.setFormatter(plain)
    use_log_format("text", (logger,))
    assert handler.formatter is plain


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, _env_file=None)


def test_a_line_logged_inside_a_job_run_names_its_job_chunk_tenant_and_worker(settings, captured):
    logger, buffer = captured
    store = JobStore(settings.SHARED_DIR)
    chunks = [ChunkRecord(index=0, queue="cpu", start=0, stop=2, task_id="t0")]
    store.create(JobRecord(id="e" * 32, kind="predict", state="dispatched", chunks=chunks, tenant="team-a"))
    with JobRun(settings, "e" * 32, unit="rows", chunk_index=0, worker="cpu-1@host", task_id="t0") as run:
        run.start(deadline=False)
        logger.info("judged a batch")
    logger.info("after the step")
    during, after = lines(buffer)
    assert {name: during[name] for name in JOB_FIELDS} == {
        "job_id": "e" * 32, "chunk": 0, "tenant": "team-a", "worker": "cpu-1@host",
    }  # fmt: skip
    assert (after["job_id"], after["chunk"], after["tenant"]) == (None, None, None)


def test_a_job_run_that_refuses_to_start_leaves_no_fields_behind(settings, captured):
    logger, buffer = captured
    store = JobStore(settings.SHARED_DIR)
    store.create(JobRecord(id="f" * 32, kind="train", state="queued", tenant="team-b"))
    store.cancel("f" * 32)
    with pytest.raises(JobCancelledError), JobRun(settings, "f" * 32, unit="steps"):
        pass
    logger.info("next task")
    [entry] = lines(buffer)
    assert (entry["job_id"], entry["tenant"]) == (None, None)


def test_the_workers_name_is_on_every_line_of_its_process(captured, monkeypatch):
    logger, buffer = captured
    monkeypatch.setattr("shared.log_format._process_fields", {})
    set_process_log_fields(worker="gpu0@host")
    logger.info("heartbeat")
    with log_context(worker="gpu0@host", job_id="j"):
        logger.info("in a job")
    assert [entry["worker"] for entry in lines(buffer)] == ["gpu0@host", "gpu0@host"]
