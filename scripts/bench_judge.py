"""Benchmark the judge: pairs/s and prompt tokens/s with vLLM prefix caching on vs off (same outputs).

Usage: PYTHONPATH=. .venv-worker/bin/python scripts/bench_judge.py --pairs 24 [--with-transformers]
Prints one JSON object. Needs the worker environment (`make setup`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "preference_pairs.csv"


def run_engine(settings, pairs, *, engine_kind: str, prefix_cache: bool) -> dict:
    from workers.stacking.predictor import Judge

    started = time.perf_counter()
    judge = Judge.open(settings, engine_kind=engine_kind, enable_prefix_caching=prefix_cache)
    load_seconds = time.perf_counter() - started
    try:
        result = judge.judge(pairs)
        engine = judge.engine
        cached = getattr(engine, "cached_prompt_tokens", None)
        counted = getattr(engine, "prompt_tokens", None)
    finally:
        judge.close()
    return {
        "engine": engine_kind,
        "prefix_caching": prefix_cache,
        "load_seconds": round(load_seconds, 1),
        "judge_seconds": round(result.seconds, 2),
        "pairs_per_second": round(len(pairs) / result.seconds, 3),
        "prompt_tokens_per_second": round(result.prompt_tokens / result.seconds, 1),
        "prompt_tokens": result.prompt_tokens,
        "cached_token_fraction": round(cached / counted, 3) if counted else None,
        "_probabilities": result.raw_probabilities,
        "_votes": result.vote_logprobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--offset", type=int, default=100, help="first row used (skips warm rows of other runs)")
    parser.add_argument(
        "--min-prefix-tokens",
        type=int,
        default=0,
        help="only pairs whose conversation prefix has at least this many tokens (e.g. 800 for Kaggle-length rows)",
    )
    parser.add_argument("--with-transformers", action="store_true", help="also time the transformers engine")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from shared.arena_csv import read_arena_csv
    from shared.settings import get_settings

    settings = get_settings()
    candidates = read_arena_csv(args.data).pairs[args.offset :]
    if args.min_prefix_tokens:
        from workers.judge.engines import load_tokenizer
        from workers.judge.prompts import JudgePromptBuilder

        builder = JudgePromptBuilder(load_tokenizer(settings.judge_model_path), max_model_len=settings.MAX_MODEL_LEN)
        candidates = (pair for pair in candidates if len(builder.build(pair).prefixes[0]) >= args.min_prefix_tokens)
    pairs = list(itertools.islice(candidates, args.pairs))
    runs = [
        run_engine(settings, pairs, engine_kind="vllm", prefix_cache=True),
        run_engine(settings, pairs, engine_kind="vllm", prefix_cache=False),
    ]
    if args.with_transformers:
        runs.append(run_engine(settings, pairs, engine_kind="transformers", prefix_cache=True))
    cached, uncached = runs[0], runs[1]
    report = {
        "pairs": len(pairs),
        "min_prefix_tokens": args.min_prefix_tokens,
        "criteria": 5,
        "orders": 2,
        "max_model_len": settings.MAX_MODEL_LEN,
        "dtype": settings.JUDGE_DTYPE,
        "prefix_cache_speedup": round(uncached["judge_seconds"] / cached["judge_seconds"], 2),
        "max_abs_probability_diff_cache_on_vs_off": float(
            abs(cached["_probabilities"] - uncached["_probabilities"]).max()
        ),
        "max_abs_vote_logprob_diff_cache_on_vs_off": float(abs(cached["_votes"] - uncached["_votes"]).max()),
        "runs": [{key: value for key, value in run.items() if not key.startswith("_")} for run in runs],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
