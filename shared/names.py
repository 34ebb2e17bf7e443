"""Names the gateway and the workers agree on: Celery task names and queue names.

The gateway sends tasks by these names (`send_task`), so it never imports worker code.
"""

from __future__ import annotations

import re

# One task per job step; the dotted names are what Flower shows.
PREDICT_SHARD_TASK = "arena.predict.shard"
PREDICT_ASSEMBLE_TASK = "arena.predict.assemble"
SCORE_TASK = "arena.score"
TRAIN_TASK = "arena.train"
SYNTH_TASK = "arena.synth"

CPU_QUEUE = "cpu"
GPU_QUEUE_PREFIX = "gpu."
_GPU_QUEUE = re.compile(r"^gpu\.(\d+)$")


def gpu_queue(index: int) -> str:
    """The queue of the worker pinned to GPU `index` (CUDA_VISIBLE_DEVICES=index)."""
    return f"{GPU_QUEUE_PREFIX}{index}"


def gpu_index(queue: str) -> int | None:
    """The GPU index of a `gpu.N` queue name, None for any other queue."""
    match = _GPU_QUEUE.match(queue)
    return int(match.group(1)) if match else None
