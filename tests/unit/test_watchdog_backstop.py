"""A watched task stuck in one C call that holds the GIL (the watchdog thread cannot run) still ends: faulthandler's
own thread exits the worker process once the block outlives its limit by BACKSTOP_MARGIN_S."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from shared.settings import REPO_ROOT

STUCK_WORKER = textwrap.dedent(
    """
    import io
    import re
    import sys
    from workers.jobs import run

    sys.stderr = io.StringIO()  # as in a Celery worker: sys.stderr is a logging proxy without a file descriptor

    run.BACKSTOP_MARGIN_S = 0.5
    with run.watched_task(task_id="score-stuck", time_limit_s=0.5):
        # Exponential backtracking in one C call: minutes, with the GIL held the whole time.
        re.match(r"(a|aa)+$", "a" * 60 + "b")
    print("finished")
    """
)


def test_a_task_stuck_in_one_gil_holding_call_is_ended_by_the_backstop():
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STUCK_WORKER], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1 and "finished" not in done.stdout, (done.returncode, done.stdout, done.stderr[-500:])
    assert "Timeout" in done.stderr  # faulthandler's stack dump, for the worker's log
    assert elapsed < 30, elapsed


def test_a_task_that_ends_in_time_cancels_the_backstop():
    quick = STUCK_WORKER.replace('re.match(r"(a|aa)+$", "a" * 60 + "b")', "pass") + "import time; time.sleep(1.5)\n"
    done = subprocess.run([sys.executable, "-c", quick], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-500:]
