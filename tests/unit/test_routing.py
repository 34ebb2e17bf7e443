"""Where work goes (one shared queue per device class) and how a predict job is cut into chunks."""

from shared.names import worker_queues
from shared.routing import MAX_CHUNKS_PER_JOB, job_queue, plan_chunks
from shared.settings import Settings


def test_chunks_cover_every_row_once_in_order_whatever_the_worker_count():
    assert plan_chunks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert plan_chunks(4, 128) == [(0, 4)]
    assert plan_chunks(0, 128) == [(0, 0)]  # an empty dataset still has one (empty) chunk to assemble


def test_a_huge_dataset_gets_larger_chunks_not_more():
    chunks = plan_chunks(1_000_000, 128)
    assert len(chunks) <= MAX_CHUNKS_PER_JOB
    assert chunks[0][0] == 0 and chunks[-1][1] == 1_000_000
    assert all(stop == next_start for (_, stop), (next_start, _) in zip(chunks, chunks[1:], strict=False))


def test_work_goes_to_the_shared_gpu_queue_when_a_gpu_worker_is_up_else_cpu_else_the_fallback():
    gpu_host_a = {"gpu0@a": worker_queues("gpu.0"), "gpu1@a": worker_queues("gpu.1")}
    assert worker_queues("gpu.1") == ["gpu.1", "gpu"] and worker_queues("cpu") == ["cpu"]
    assert job_queue({**gpu_host_a, "gpu0@b": worker_queues("gpu.0"), "cpu@c": ["cpu"]}, fallback="cpu") == "gpu"
    assert job_queue({"cpu-1@a": ["cpu"], "cpu-2@b": ["cpu"]}, fallback="gpu") == "cpu"
    assert job_queue({}, fallback="gpu") == "gpu"
    assert job_queue({"gpu0@old": ["gpu.0"]}, fallback="cpu") == "gpu"  # a worker of the release before


def test_a_fallback_queue_of_the_release_before_means_the_shared_gpu_queue():
    assert Settings(FALLBACK_QUEUE="gpu.0", _env_file=None).FALLBACK_QUEUE == "gpu"
    assert Settings(SHARD_MAX_RETRIES=5, _env_file=None).CHUNK_MAX_RETRIES == 5  # the former name still counts
