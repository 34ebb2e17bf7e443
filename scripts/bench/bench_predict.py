"""Benchmark the default predict path: rows/s and peak memory of `arena predict`, and the encoder's FLOP/s.

Runs `scripts/arena predict` (the default predictor, as a user would) on a sample of a labelled arena CSV, cold
(embedding cache off) and, with --with-cache, twice more with the cache on (the second run reads it back). Then
times the sentence encoder alone on the same distinct texts and sets its FLOP/s against this CPU's measured
matmul peak (fp32 numpy, int8 ONNX Runtime). Prints one JSON object.

    PYTHONPATH=. .venv-worker/bin/python scripts/bench/bench_predict.py --rows 1600 [--with-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from workers.common.hardware import prepare_process_environment  # noqa: E402  (the path above first)

prepare_process_environment()  # before torch loads, as the worker and the CLI do
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "preference_pairs.csv"


def sample_csv(source: Path, rows: int, seed: int, target: Path) -> int:
    import pandas as pd

    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame = frame.sample(n=min(rows, len(frame)), random_state=seed).sort_index()
    frame.to_csv(target, index=False)
    return len(frame)


def run_predict(input_csv: Path, output_csv: Path, *, cache_mb: int) -> dict:
    """One `arena predict` process: wall seconds and its own peak RSS (wait4 reads the child's rusage)."""
    env = {**os.environ, "EMBEDDING_CACHE_MAX_MB": str(cache_mb)}
    command = [str(ROOT / "scripts" / "arena"), "predict", "--input", str(input_csv), "--output", str(output_csv)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    summary = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"arena predict failed (status {status}): {summary.decode(errors='replace')[-500:]}")
    return {
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }


MATMUL_SIZE = 2048


def _matmul_rate(multiply, size: int, seconds: float) -> float:
    """G(FL)OP/s of `multiply` (one size×size matmul), repeated for `seconds` after one warm-up call."""
    multiply()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        multiply()
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def fp32_peak(seconds: float = 3.0) -> float:
    """GFLOP/s of a large fp32 matmul (numpy's BLAS, all cores)."""
    size = MATMUL_SIZE
    a, b = np.random.rand(size, size).astype(np.float32), np.random.rand(size, size).astype(np.float32)
    return _matmul_rate(lambda: a @ b, size, seconds)


def bf16_peak(seconds: float = 3.0) -> float | None:
    """GFLOP/s of a large bf16 matmul in torch, where the CPU multiplies bf16 in hardware (the torch backend's dtype
    there); None elsewhere."""
    from workers.common.hardware import cpu_has_fast_bf16

    if not cpu_has_fast_bf16():
        return None
    import torch

    size = MATMUL_SIZE
    a, b = torch.rand(size, size, dtype=torch.bfloat16), torch.rand(size, size, dtype=torch.bfloat16)
    return _matmul_rate(lambda: a @ b, size, seconds)


def int8_peak(seconds: float = 3.0) -> float | None:
    """GOP/s of a large int8 matmul in ONNX Runtime (MatMulInteger, the op a dynamically quantized encoder runs)."""
    try:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return None
    size = MATMUL_SIZE
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
        initializer=[
            helper.make_tensor(
                "b",
                TensorProto.INT8,
                [size, size],
                np.random.randint(-127, 127, (size, size), dtype=np.int8).tobytes(),
                raw=True,
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.random.randint(0, 255, (size, size), dtype=np.uint8)
    del onnx
    return _matmul_rate(lambda: session.run(None, {"a": a}), size, seconds)


def encoder_figures(input_csv: Path, backend: str) -> dict:
    from shared.arena_csv import read_arena_csv
    from shared.settings import get_settings
    from workers.predictor.sentence_encoder import TextEncoder
    from workers.predictor.text_model import _joined

    pairs = read_arena_csv(input_csv).pairs
    texts = list(
        dict.fromkeys(_joined(part) for pair in pairs for part in (pair.prompt, pair.response_a, pair.response_b))
    )
    encoder = TextEncoder(get_settings().text_encoder_path, backend=backend)
    encoder.encode(texts[:64])
    encoder.processed_tokens, encoder.processed_flops = 0, 0.0
    started = time.perf_counter()
    encoder.encode(texts)
    seconds = time.perf_counter() - started
    return {
        "backend": encoder.backend,
        "distinct_texts": len(texts),
        "seconds": round(seconds, 1),
        "padded_tokens_per_second": round(encoder.processed_tokens / seconds),
        "gflops_per_second": round(encoder.processed_flops / seconds / 1e9, 1),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-cache", action="store_true", help="also time two runs with the embedding cache on")
    parser.add_argument("--backends", default="onnx-int8,torch", help="encoder backends timed alone")
    args = parser.parse_args()
    from workers.common.hardware import cpu_has_fast_bf16

    with tempfile.TemporaryDirectory() as scratch:
        sample = Path(scratch) / "sample.csv"
        rows = sample_csv(args.input, args.rows, args.seed, sample)
        output = Path(scratch) / "submission.csv"
        report: dict = {
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "bf16_hardware": cpu_has_fast_bf16(),
            "rows": rows,
        }
        cold = run_predict(sample, output, cache_mb=0)
        report["predict_cold"] = {**cold, "rows_per_second": round(rows / cold["wall_seconds"], 1)}
        if args.with_cache:
            run_predict(sample, output, cache_mb=1024)
            warm = run_predict(sample, output, cache_mb=1024)
            report["predict_cached"] = {**warm, "rows_per_second": round(rows / warm["wall_seconds"], 1)}
        peaks = {
            "fp32_gflops": round(fp32_peak(), 1),
            "bf16_gflops": round(bf16_peak() or 0.0, 1) or None,
            "int8_gops": round(int8_peak() or 0.0, 1) or None,
        }
        report["matmul_peak"] = peaks
        report["encoder"] = []
        for backend in args.backends.split(","):
            figures = encoder_figures(sample, backend)
            # The peak of the arithmetic the backend runs: int8 for onnx-int8; bf16 autocast for torch where the CPU
            # has bf16 hardware, else fp32.
            peak_name = (
                "int8_gops" if backend == "onnx-int8" else ("bf16_gflops" if peaks["bf16_gflops"] else "fp32_gflops")
            )
            if peaks[peak_name]:
                figures["share_of_matmul_peak"] = round(figures["gflops_per_second"] / peaks[peak_name], 3)
                figures["peak_used"] = peak_name
            report["encoder"].append(figures)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
