"""Abandoned score work is dropped, by any worker, including one started after the gateway gave up: real Redis, the
real gateway app, a real Celery worker (transformers engine, the real small model).

Score requests time out (504) while no worker takes them; the revoke the gateway sends then reaches nobody, so only
what the message carries can stop them: the deadline in its payload, on the one clock (shared/clock.py). The
message's Celery expiry is only a backstop an hour later, since Celery compares it with each worker's own clock.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from celery.result import AsyncResult
from fastapi.testclient import TestClient

from api.main import create_app
from shared.names import SCORE_TASK
from shared.worker_presence import announce, redis_client, withdraw
from tests.api.conftest import API_KEY
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]

PAIR = {"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "5"}
STALE = 6


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="transformers")
    yield stack
    stack.stop()


def queued_task_ids(client: redis.Redis, queue_key: str) -> list[str]:
    return [json.loads(message)["headers"]["id"] for message in client.lrange(queue_key, 0, -1)]


def test_score_requests_the_gateway_gave_up_on_are_skipped_by_a_worker_started_later(stack):
    celery = stack.client.app.state.celery
    client = redis_client(stack.settings)
    queue_key = f"{stack.prefix}cpu"
    # A worker announces itself on cpu but takes nothing (busy, or about to be restarted): the requests queue.
    announce(client, stack.settings, "gone@test", ["cpu"], idle_since=None)
    impatient = stack.settings.model_copy(update={"SCORE_TIMEOUT_S": 1.5})
    with TestClient(create_app(impatient), headers={"X-API-Key": API_KEY}) as gateway:
        body = {"pairs": [PAIR], "raw": True, "tta": False}
        with ThreadPoolExecutor(STALE) as pool:
            responses = list(pool.map(lambda _: gateway.post("/v1/score", json=body), range(STALE)))
    assert [response.status_code for response in responses] == [504] * STALE
    assert "SCORE_TIMEOUT_S" in responses[0].json()["detail"]
    stale = queued_task_ids(client, queue_key)
    assert len(stale) == STALE  # still queued: nobody heard the gateway's revoke
    withdraw(client, stack.settings, "gone@test")

    stack.start_worker("cpu")  # a worker that never heard of those revokes
    fresh = stack.client.post("/v1/score", json=body)
    assert fresh.status_code == 200, fresh.text

    # Answered on arrival as expired by its payload's deadline, never judged, and nothing left in the queue.
    results = [AsyncResult(task_id, app=celery) for task_id in stale]
    assert {result.state for result in results} == {"SUCCESS"}
    assert all(result.result["expired"] is True and "not judged" in result.result["error"] for result in results)
    assert client.llen(queue_key) == 0


def test_a_score_task_past_the_deadline_in_its_payload_is_answered_without_judging(stack):
    """The second guard, for a message that did not expire (a gateway of an older release, a skewed clock)."""
    if not stack.workers:
        stack.start_worker("cpu")
    celery = stack.client.app.state.celery
    payload = {"pairs": [PAIR], "raw": True, "tta": False, "deadline": time.time() - 1}
    started = time.monotonic()
    result = celery.send_task(SCORE_TASK, args=[payload], queue="cpu").get(timeout=60)
    assert result["expired"] is True and "not judged" in result["error"]
    assert time.monotonic() - started < 30
