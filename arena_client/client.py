"""A client of the arena gateway's REST API (/v1): httpx only, so it runs anywhere the gateway is reachable.

Every request goes through `ArenaClient.request`, which retries what the server or the proxy asks to be retried
(429, 502, 503, 504) after the time its `Retry-After` names, within a bound on the number of retries and on the
total time spent waiting. Job submissions carry an `Idempotency-Key` made once per submission and resent on each
retry, so a retried submit never makes a second job (the gateway answers 200 with the first one).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# What `make up` (scripts/stack.sh) writes the key it generated to: RUN_DIR, by default var/run/ of the checkout.
REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
# Without Retry-After: 1, 2, 4, ... seconds, each at most this long.
MAX_BACKOFF_S = 30.0


class ArenaError(Exception):
    """A request the server refused or could not answer; `status` is None when no answer came at all."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def client_error(self) -> bool:
        """A 4xx: the request itself must change (exit 2), as opposed to a server that did not cope (exit 1)."""
        return self.status is not None and 400 <= self.status < 500


def error_detail(response: httpx.Response) -> str:
    """The server's reason on one line: FastAPI's `detail` (a string, or a list of validation errors as
    `field: message`), RFC 9457's `detail`/`title`, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail: Any = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, dict):
                location = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
                parts.append(f"{location}: {error.get('msg', '')}" if location else str(error.get("msg", "")))
            else:
                parts.append(str(error))
        detail = "; ".join(parts)
    if not detail:
        detail = response.text.strip()[:300] or response.reason_phrase
    return " ".join(str(detail).split())


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def local_api_key() -> str | None:
    """The key `make up` generated (RUN_DIR/api_key, by default var/run/api_key of this checkout), if readable."""
    path = Path(os.environ.get("RUN_DIR") or REPO_ROOT / "var" / "run") / "api_key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep retrying answers that ask for it.

    Args:
        max_retries: retries of one request after its first try.
        max_wait_s: the total sleep across those retries; a Retry-After that would pass it ends the retries.
        connect_retries: of those, retries of a connection refused (a gateway restarting comes back in seconds;
            one that is down should say so soon).
    """

    max_retries: int = 8
    max_wait_s: float = 300.0
    connect_retries: int = 3


class ArenaClient:
    """The gateway's REST API.

    Args:
        url: the gateway (or its proxy), e.g. http://127.0.0.1:8000.
        api_key: sent as `Authorization: Bearer ...`; None sends none (only /healthz and /readyz answer then).
        retry: the bound on retries of 429/502/503/504 answers.
        transport: an httpx transport (tests pass an httpx.MockTransport).
        sleep: how to wait between retries (tests record instead).
        timeout_s: seconds to wait on one read; an upload's body has as long per write.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 120.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )
        self.retry = retry
        self.sleep = sleep

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ArenaClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # --- one request, retried ----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        rewind: BinaryIO | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        stream_to: Path | None = None,
        **kwargs,
    ) -> httpx.Response:
        """Send a request, retrying 429/502/503/504 after their Retry-After (else 1, 2, 4... s) within the policy.

        A connection that could not be opened is retried the same way (nothing reached the server). `rewind` is a
        file sent as the body, sought back to its start before each try. With `stream_to`, a successful answer's
        body is written there as it arrives. Raises ArenaError for any other status, naming the server's reason.
        """
        waited = 0.0
        status: int | None = None
        refused = 0
        for attempt in range(self.retry.max_retries + 1):
            if rewind is not None:
                rewind.seek(0)
            try:
                response = self._send(method, path, stream_to=stream_to, **kwargs)
            except httpx.ConnectError as exc:
                reason, delay, status = f"cannot connect to {self.http.base_url} ({exc})", None, None
                refused += 1
            except httpx.TimeoutException as exc:
                raise ArenaError(f"{method} {path}: no answer in time ({type(exc).__name__})") from None
            else:
                if response.status_code in ok:
                    return response
                status = response.status_code
                reason = f"{status}: {error_detail(response)}"
                if status not in RETRY_STATUSES:
                    raise ArenaError(reason, status=status)
                delay = retry_after_seconds(response.headers.get("Retry-After"))
            delay = min(2.0**attempt, MAX_BACKOFF_S) if delay is None else delay
            if (
                attempt == self.retry.max_retries
                or waited + delay > self.retry.max_wait_s
                or refused > self.retry.connect_retries
            ):
                break
            self.sleep(delay)
            waited += delay
        raise ArenaError(f"{reason} (gave up after {attempt + 1} tries, {waited:.0f} s waited)", status=status)

    def _send(self, method: str, path: str, *, stream_to: Path | None, **kwargs) -> httpx.Response:
        if stream_to is None:
            return self.http.request(method, path, **kwargs)
        with self.http.stream(method, path, **kwargs) as response:
            if response.status_code == 200:
                partial = stream_to.with_name(stream_to.name + ".part")
                with open(partial, "wb") as out:
                    for block in response.iter_bytes():
                        out.write(block)
                partial.replace(stream_to)  # no half-written file under the real name if the transfer breaks
            else:
                response.read()
            return response

    # --- the API -----------------------------------------------------------------------------------------------

    def upload(self, path: Path) -> dict:
        """POST /v1/datasets (multipart `file`): the dataset's record (`id`, `rows`, `labelled`...)."""
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise ArenaError(f"cannot read {path}: {exc.strerror}") from None
        with handle:
            files = {"file": (Path(path).name, handle, "text/csv")}
            return self.request("POST", "/v1/datasets", files=files, rewind=handle).json()

    def submit(self, kind: str, body: dict, *, idempotency_key: str | None = None) -> dict:
        """POST /v1/jobs/{kind}: `{job_id, kind, state}`. One Idempotency-Key for every retry of this submission."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return self.request("POST", f"/v1/jobs/{kind}", json=body, headers=headers).json()

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self, *, state: str | None = None, kind: str | None = None, limit: int = 50) -> Iterator[dict]:
        """Every job the key may see, newest first, following the X-Next-Cursor pages."""
        params: dict[str, str | int] = {"limit": limit}
        if state:
            params["state"] = state
        if kind:
            params["kind"] = kind
        while True:
            response = self.request("GET", "/v1/jobs", params=params)
            yield from response.json()
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor:
                return
            params["after"] = cursor

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def delete(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{job_id}")

    def download(self, job_id: str, name: str, output: Path) -> Path:
        """GET /v1/jobs/{id}/artifacts/{name} into `output` (written whole or not at all)."""
        self.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}", ok=(200,), stream_to=Path(output))
        return Path(output)

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        on_progress: Callable[[dict], None] | None = None,
    ) -> dict:
        """Poll the job until it is succeeded, failed or cancelled; its last record. `on_progress(record)` sees
        every poll. Safe to call again on the same id: waiting holds no state."""
        while True:
            record = self.job(job_id)
            if on_progress is not None:
                on_progress(record)
            if record["state"] in TERMINAL_STATES:
                return record
            self.sleep(poll_s)
