"""Names the gateway and the workers agree on: Celery task names and queue names.

The gateway sends tasks by these names (`send_task`), so it never imports worker code.
"""

from __future__ import annotations

import re

# One task per job step; the dotted names are what Flower shows.
PREDICT_CHUNK_TASK = "arena.predict.chunk"
# Messages sent by a release that cut jobs into one shard per queue: still judged, as the chunk of that index.
LEGACY_PREDICT_SHARD_TASK = "arena.predict.shard"
PREDICT_ASSEMBLE_TASK = "arena.predict.assemble"
SCORE_TASK = "arena.score"
TRAIN_TASK = "arena.train"
SYNTH_TASK = "arena.synth"
LEADERBOARD_TASK = "arena.leaderboard"

# One queue per device class, shared by every worker of that class on every host: a job's chunks wait there and
# each free worker pulls the next one. A GPU worker also consumes gpu.N, the queue of the GPU it is pinned to.
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
GPU_QUEUE_PREFIX = "gpu."
_GPU_QUEUE = re.compile(r"^gpu\.(\d+)$")


def gpu_queue(index: int) -> str:
    """The queue of the worker pinned to GPU `index` (CUDA_VISIBLE_DEVICES=index)."""
    return f"{GPU_QUEUE_PREFIX}{index}"


def gpu_index(queue: str) -> int | None:
    """The GPU index of a `gpu.N` queue name, None for any other queue."""
    match = _GPU_QUEUE.match(queue)
    return int(match.group(1)) if match else None


def worker_queues(queue: str) -> list[str]:
    """The queues a worker started for `queue` consumes: gpu.N also takes the shared gpu queue."""
    return [queue, GPU_QUEUE] if gpu_index(queue) is not None else [queue]
