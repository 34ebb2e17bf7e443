"""The engine benchmark's own parts: the naive loop gives the transformers engine's votes, the table reads right,
and an engine that cannot run here is skipped with its reason (a tiny random model; no real model needed)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_judge", REPO_ROOT / "scripts" / "bench" / "bench_judge.py")
bench_judge = importlib.util.module_from_spec(spec)
sys.modules["bench_judge"] = bench_judge
spec.loader.exec_module(bench_judge)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=2,
    )
    model_dir = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(model_dir)
    return model_dir


def test_the_naive_loop_and_the_shared_prefix_engine_cast_the_same_votes(tiny_model):
    from workers.judge.engines import TransformersEngine

    rng = np.random.default_rng(0)
    prefixes = [rng.integers(3, 96, size=length).tolist() for length in (40, 7, 65)]
    # Suffixes of different lengths: the shared-prefix engine pads them in one batch, the naive loop never pads.
    suffixes = [[10, 11, 12], [13], [14, 15, 16, 17, 18]]
    votes = [20, 21, 22, 23]
    naive = bench_judge.NaiveLoopEngine(str(tiny_model), dtype="float32", device="cpu")
    shared = TransformersEngine(tiny_model, dtype="float32", device="cpu")
    from_naive = naive.vote_logprobs(prefixes, suffixes, votes)
    from_shared = shared.vote_logprobs(prefixes, suffixes, votes)
    assert from_naive.shape == (3, 3, 4)
    np.testing.assert_allclose(np.exp(from_naive).sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(from_naive, from_shared, atol=1e-5)
    assert np.ptp(from_naive, axis=0).max() > 1e-3, "different prefixes must get different votes"


def run(engine: str, seconds: float, *, shift: float = 0.0, cached: float | None = None) -> "bench_judge.EngineRun":
    votes = np.log(np.full((2, 2, 5, 4), 0.25))
    votes[..., 0] = np.log(0.25 + shift)
    votes[..., 1] = np.log(0.25 - shift)
    return bench_judge.EngineRun(
        engine=engine,
        rows="typical rows",
        pairs=2,
        seconds=seconds,
        prompt_tokens=5000,
        load_seconds=1.0,
        cached_token_fraction=cached,
        vote_logprobs=votes,
        probabilities=np.full((2, 3), 1 / 3) + np.array([shift, -shift, 0.0]),
    )


def test_the_table_compares_every_engine_with_the_naive_loop():
    runs = [run("naive", 10.0), run("transformers", 2.5, shift=0.01), run("vllm", 2.0, shift=0.02, cached=0.8)]
    lines = bench_judge.table(runs).splitlines()
    assert lines[0].startswith("| engine | pairs/s | prompt tok/s | load s | × naive |")
    assert lines[2] == "| naive | 0.200 | 500 | 1.0 | 1.00× | — | — |"
    assert lines[3] == "| transformers | 0.800 | 2,000 | 1.0 | 4.00× | 0.01 | 0.01 |"
    assert lines[4] == "| vllm | 1.000 | 2,500 | 1.0 | 5.00× | 0.02 | 0.02 |"
    runs.append(run("vllm-no-cache", 6.0, cached=0.0))
    assert bench_judge.prefix_reuse_lines(runs) == [
        "prefix reuse, vLLM prefix cache on vs off: 3.00×, 80% of prompt tokens from the cache",
        "prefix reuse, transformers shared-prefix KV vs naive loop: 4.00×",
    ]


def test_without_the_naive_loop_the_table_has_no_reference():
    [header, _, row] = bench_judge.table([run("transformers", 2.5)]).splitlines()
    assert row == "| transformers | 0.800 | 2,000 | 1.0 | — | — | — |"


def test_vllm_is_skipped_with_its_reason_where_it_cannot_run(monkeypatch):
    from workers.judge import engines

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench_judge.vllm_skip_reason("cuda") == "vLLM is not installed in this environment"
    monkeypatch.undo()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(engines, "cuda_available", lambda: True)
    assert "--device cuda" in bench_judge.vllm_skip_reason("cpu")
    assert bench_judge.vllm_skip_reason("cuda") is None


def test_unknown_engines_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench_judge.main(["--engines", "naive,llama.cpp"])
    assert "llama.cpp" in capsys.readouterr().err


def test_repeats_start_cold_and_the_fastest_is_kept(monkeypatch):
    from types import SimpleNamespace

    from workers.judge import votes

    class CountingEngine:
        resets = 0
        closed = False

        def vote_logprobs(self, prefixes, suffixes, vote_token_ids, *, on_prefix_done=None):
            return np.zeros((len(prefixes), len(suffixes), len(vote_token_ids)))

        def reset_prefix_cache(self):
            self.resets += 1

        def close(self):
            self.closed = True

    engine = CountingEngine()
    durations = iter([3.0, 1.5, 2.0])

    def judge_pairs(pairs, *, engine, prompt_builder, chunk_pairs):
        return SimpleNamespace(
            seconds=next(durations),
            prompt_tokens=100,
            vote_logprobs=np.zeros((len(pairs), 2, 5, 4)),
            raw_probabilities=np.full((len(pairs), 3), 1 / 3),
        )

    monkeypatch.setattr(bench_judge, "open_engine", lambda name, settings, device: engine)
    monkeypatch.setattr(votes, "judge_pairs", judge_pairs)
    prompt_builder = SimpleNamespace(suffix_ids=[[5]], vote_token_ids=[1, 2, 3, 4])
    settings = SimpleNamespace(JUDGE_CHUNK_PAIRS=8)
    [kept] = bench_judge.run_engine(
        "vllm", settings, {"typical rows": ["pair"] * 2}, prompt_builder=prompt_builder, device="cpu", repeats=3
    )
    assert kept.repeat_seconds == [3.0, 1.5, 2.0]
    assert kept.seconds == 1.5 and kept.pairs_per_second == pytest.approx(2 / 1.5)
    assert engine.resets == 3, "every repeat must start with an empty prefix cache"
    assert engine.closed
