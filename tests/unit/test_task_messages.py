"""Workers check every id in a task message with the gateway's rules before a path is made from it."""

from __future__ import annotations

import pytest

from workers import tasks
from workers.tasks import RejectedMessageError, checked_chunk_index, checked_job_id

BAD_IDS = ["../../etc/passwd", "/tmp/x", "a" * 31, "A" * 32, "a" * 32 + "/..", "", None, 7, ["a" * 32]]


@pytest.mark.parametrize("job_id", BAD_IDS)
def test_a_malformed_job_id_is_rejected_before_any_path(job_id, caplog):
    with pytest.raises(RejectedMessageError, match="32 hex digits"):
        checked_job_id(job_id, task="t")
    assert "rejected a task message" in caplog.text


@pytest.mark.parametrize("index", [-1, "0", 1.5, True, None, 10**12])
def test_a_malformed_chunk_index_is_rejected(index):
    with pytest.raises(RejectedMessageError):
        checked_chunk_index(index, task="t")


def test_good_ids_pass():
    assert checked_job_id("0123456789abcdef" * 2, task="t") == "0123456789abcdef" * 2
    assert checked_chunk_index(3, task="t") == 3


def test_the_tasks_reject_a_path_in_job_id(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARED_DIR", str(tmp_path))
    tasks.get_settings.cache_clear()
    try:
        for run in (
            lambda: tasks.predict_assemble.run(job_id="../../outside"),
            lambda: tasks.predict_chunk.run(job_id="../../outside", chunk_index=0),
            lambda: tasks.leaderboard.run(job_id="../../outside"),
        ):
            with pytest.raises(RejectedMessageError):
                run()
        assert list(tmp_path.iterdir()) == []  # nothing was made from the message
    finally:
        tasks.get_settings.cache_clear()
