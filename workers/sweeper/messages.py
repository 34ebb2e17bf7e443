"""The task messages the sweeper sends: by name, to a queue, under a fixed id (no Celery in here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.names import LEADERBOARD_TASK, SYNTH_TASK, TRAIN_TASK

# The one task each job kind that is not cut into chunks runs as.
WHOLE_JOB_TASKS = {"train": TRAIN_TASK, "synth": SYNTH_TASK, "leaderboard": LEADERBOARD_TASK}


@dataclass(frozen=True)
class TaskMessage:
    """One task to send: by name, to a queue, under a fixed id."""

    name: str
    kwargs: dict
    queue: str
    task_id: str


Send = Callable[[TaskMessage], None]
