"""Score tasks are bounded on the worker: a task nobody waits for any more is answered without judging, and one
stuck past SCORE_TASK_TIME_LIMIT_S makes the watchdog stop the worker (here a recorded call instead of the exit),
with no job record to fail."""

from __future__ import annotations

import time

import pytest

from shared.settings import Settings
from workers.background import WorkerBackground
from workers.jobs import run as run_module
from workers.jobs import score as score_step
from workers.jobs.run import watched_task


@pytest.fixture
def settings(tmp_path) -> Settings:
    # Redis unreachable on purpose: the watchdog must act without it. No model either: nothing may be judged.
    return Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, REDIS_URL="redis://127.0.0.1:1/0",
                    HARD_STOP_GRACE_S=300, SCORE_TASK_TIME_LIMIT_S=20, MODEL_PATH=str(tmp_path / "absent"),
                    _env_file=None)  # fmt: skip


def test_a_score_task_past_its_limit_stops_the_worker_without_a_job_record(settings, monkeypatch, caplog):
    stops: list = []
    background = WorkerBackground(settings, worker="w1@host", queues=["cpu"], send=lambda message: None,
                                  hard_stop=lambda: stops.append(1))  # fmt: skip
    with watched_task(task_id="score-1", time_limit_s=settings.SCORE_TASK_TIME_LIMIT_S) as step:
        started = step.deadline - 20
        monkeypatch.setattr("time.time", lambda: started + 19)
        assert background.watchdog() is False and stops == []
        # No HARD_STOP_GRACE_S for a score task: nothing checks its deadline between chunks.
        monkeypatch.setattr("time.time", lambda: started + 21)
        assert background.watchdog() is True and stops == [1]
    assert "score task score-1" in caplog.text and "SCORE_TASK_TIME_LIMIT_S" in caplog.text
    assert not (settings.SHARED_DIR / "jobs").exists() or not any((settings.SHARED_DIR / "jobs").iterdir())
    assert run_module.running_step() is None


def test_a_score_request_past_its_deadline_is_answered_without_judging(settings):
    pair = {"prompt": "Hi?", "response_a": "Hello!", "response_b": "Hey."}
    result = score_step.run_score(settings, {"pairs": [pair], "deadline": time.time() - 5}, task_id="t")
    assert result["expired"] is True and "not judged" in result["error"]
    assert run_module.running_step() is None
    # Still wanted: it goes on to the judge, which is missing here (so it would have judged).
    with pytest.raises(Exception, match="absent|not found|No such|model"):
        score_step.run_score(settings, {"pairs": [pair], "deadline": time.time() + 60, "raw": True}, task_id="t")
