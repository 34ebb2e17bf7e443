"""Where a job's tasks go (the shared queue of a device class) and how a predict job is cut into chunks."""

from __future__ import annotations

from shared.names import CPU_QUEUE, GPU_QUEUE, gpu_index

# A job record holds one entry per chunk and every entry is rewritten with each change, so their number is bounded:
# a dataset of more than MAX_CHUNKS_PER_JOB * PREDICT_CHUNK_ROWS rows gets larger chunks instead of more.
MAX_CHUNKS_PER_JOB = 1024


def job_queue(active_queues: dict[str, list[str]], *, fallback: str) -> str:
    """The queue new work goes to: gpu when a live worker consumes it, else cpu, else `fallback`.

    Args:
        active_queues: worker name → the queues it consumes (their announcements, shared/worker_presence.py).
        fallback: the queue used when no worker answers (the job then waits there).
    """
    consumed = {queue for queues in active_queues.values() for queue in queues}
    # A GPU worker of the release before the shared gpu queue announces only gpu.N: its work still goes to gpu,
    # which it does not consume; upgrade every worker together (docs/scale-out.md).
    if GPU_QUEUE in consumed:
        return GPU_QUEUE
    if CPU_QUEUE in consumed:
        return CPU_QUEUE
    if any(gpu_index(queue) is not None for queue in consumed):
        return GPU_QUEUE
    return fallback


def plan_chunks(n_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) row ranges of `chunk_rows` rows (the last one shorter), at most MAX_CHUNKS_PER_JOB.

    The plan depends on the rows and the setting only, never on how many workers there are: the same dataset is cut
    the same way whether one worker or twenty judge it, so their submissions are the same file.
    """
    if n_rows <= 0:
        return [(0, 0)]
    size = max(chunk_rows, -(-n_rows // MAX_CHUNKS_PER_JOB))
    return [(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]
