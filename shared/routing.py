"""Which queues a predict job is split over, and the rows each shard judges."""

from __future__ import annotations

from shared.names import CPU_QUEUE, gpu_index


def predict_queues(active_queues: dict[str, list[str]], *, fallback: str) -> list[str]:
    """Queues a predict job is split over: every gpu.N queue some worker consumes, else cpu, else `fallback`.

    Args:
        active_queues: worker name → the queues it consumes (from `inspect().active_queues()`).
        fallback: the queue used when no worker answers (the job then waits there).
    """
    consumed = {queue for queues in active_queues.values() for queue in queues}
    gpu = sorted((queue for queue in consumed if gpu_index(queue) is not None), key=gpu_index)
    if gpu:
        return gpu
    if CPU_QUEUE in consumed:
        return [CPU_QUEUE]
    return [fallback]


def plan_shards(n_rows: int, queues: list[str]) -> list[tuple[str, int, int]]:
    """Contiguous (queue, start, stop) row ranges, one per queue (fewer when there are fewer rows), sizes within one."""
    n_shards = max(1, min(len(queues), n_rows))
    bounds = [round(index * n_rows / n_shards) for index in range(n_shards + 1)]
    return [(queues[index], bounds[index], bounds[index + 1]) for index in range(n_shards)]
