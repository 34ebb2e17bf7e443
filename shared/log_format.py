"""Logs that machines read (LOG_FORMAT=json): one JSON object per line, with the job fields of the step it came from.

The job fields (job id, chunk, tenant, worker) travel in a context variable: a job step sets them where it starts
(workers/jobs/run.py JobRun, and the Celery task around it), the gateway sets the tenant once it knows the key
(api/main.py), and every line logged meanwhile, by our code or a library, carries them. The worker's name is also a
process-wide field, so lines from its background threads (heartbeats, the sweeper) carry it too. Text stays the
default, unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

# On every JSON line, null when unknown, so a query can filter on them whatever the line.
JOB_FIELDS = ("job_id", "chunk", "tenant", "worker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: ContextVar[dict[str, Any] | None] = ContextVar("arena_log_context", default=None)
_process_fields: dict[str, Any] = {}


def set_process_log_fields(**fields: Any) -> None:
    """Fields of every line of this process, whatever thread logs it (a worker's name)."""
    _process_fields.update(fields)


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Add `fields` to every line logged inside the block, on top of the enclosing block's.

    Yields the block's own dict: a field learnt later in the block (the tenant, once the record is read) can be
    set in it, and reaches every copy of this context (a thread of the pool that a sync route runs in).
    """
    fields = {**(_context.get() or {}), **fields}
    token = _context.set(fields)
    try:
        yield fields
    finally:
        _context.reset(token)


def push_log_fields(**fields: Any) -> Token:
    """`log_context` for code that starts and ends in two calls (Celery's task_prerun and task_postrun)."""
    return _context.set({**(_context.get() or {}), **fields})


def pop_log_fields(token: Token) -> None:
    _context.reset(token)


def current_log_fields() -> dict[str, Any]:
    return {**_process_fields, **(_context.get() or {})}


# The uvicorn access log's arguments, by position (uvicorn/protocols/http: client, method, path, version, status).
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: time (UTC, ISO 8601), level, logger, message, the job fields, the exception.

    A traceback is one string field (its newlines escaped), so a line is always one record, however many lines
    the message or the traceback holds.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = current_log_fields()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:  # `extra={"job_id": ...}` on the call wins over the context
            entry[name] = getattr(record, name, fields.get(name))
        entry.update({name: value for name, value in fields.items() if name not in entry})
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter_for(log_format: str) -> logging.Formatter | None:
    """The formatter LOG_FORMAT asks for; None for text (each handler keeps its own)."""
    return JsonFormatter() if log_format == "json" else None


def use_log_format(log_format: str, loggers: Iterable[str | logging.Logger] = ("",)) -> None:
    """Give every handler of `loggers` ("" is the root) the JSON formatter when LOG_FORMAT is json; text: no change."""
    formatter = formatter_for(log_format)
    if formatter is None:
        return
    for logger in loggers:
        logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        for handler in logger.handlers:
            handler.setFormatter(formatter)


def configure_root_logging(log_format: str) -> None:
    """A process's own logs (api.*, shared.*, workers.*) at INFO on stderr in LOG_FORMAT, until and unless something
    else configures logging (uvicorn configures only its own loggers; Celery replaces the root's handlers with its
    own, which `use_log_format` then formats). With json, warnings become log records, so they are JSON lines too.

    A root logger that has handlers already (pytest's, an embedding application's) is left alone.
    """
    if log_format == "json":
        logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter_for(log_format) or logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
