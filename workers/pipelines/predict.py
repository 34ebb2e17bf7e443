"""Predict: judge a dataset, calibrate, write the Kaggle submission."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.settings import Settings
from shared.storage import atomic_writer
from workers.pipelines.calibration import Calibrator, fit_calibrator
from workers.pipelines.data_io import ArenaDataset, Pair, write_submission
from workers.pipelines.engines import JudgeEngine, load_engine, load_tokenizer
from workers.pipelines.judge import JudgeResult, judge_pairs
from workers.pipelines.prompts import JudgePromptBuilder

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int], None]


class Judge:
    """An engine plus its prompt builder: load once, judge many datasets.

    Args:
        engine: the inference engine.
        prompt_builder: prompt/token builder for the engine's model.
        chunk_pairs: pairs per engine call.
        description: model/adapter/engine, recorded with results.
    """

    def __init__(self, engine: JudgeEngine, prompt_builder: JudgePromptBuilder, *, chunk_pairs: int, description: dict):
        self.engine = engine
        self.prompt_builder = prompt_builder
        self.chunk_pairs = chunk_pairs
        self.description = description

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        model_path: str | None = None,
        adapter_dir: str | None = None,
        engine_kind: str | None = None,
        enable_prefix_caching: bool = True,
    ) -> Judge:
        model_path = model_path or settings.judge_model_path
        engine_kind = engine_kind or settings.JUDGE_ENGINE
        tokenizer = load_tokenizer(model_path)
        prompt_builder = JudgePromptBuilder(tokenizer, max_model_len=settings.MAX_MODEL_LEN)
        engine = load_engine(
            engine_kind,
            model_path=model_path,
            adapter_dir=adapter_dir,
            max_model_len=settings.MAX_MODEL_LEN,
            dtype=settings.JUDGE_DTYPE,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=settings.ENFORCE_EAGER,
            kv_cache_gib=settings.VLLM_CPU_KVCACHE_GIB,
            gpu_memory_utilization=settings.GPU_MEMORY_UTILIZATION,
        )
        description = {
            "model": str(model_path),
            "adapter": str(adapter_dir) if adapter_dir else None,
            "engine": engine_kind,
            "dtype": settings.JUDGE_DTYPE,
            "max_model_len": settings.MAX_MODEL_LEN,
            "prefix_caching": enable_prefix_caching,
        }
        return cls(engine, prompt_builder, chunk_pairs=settings.JUDGE_CHUNK_PAIRS, description=description)

    def judge(
        self, pairs: Sequence[Pair], *, tta: bool = True, on_progress: ProgressCallback | None = None
    ) -> JudgeResult:
        return judge_pairs(
            pairs,
            engine=self.engine,
            prompt_builder=self.prompt_builder,
            tta=tta,
            chunk_pairs=self.chunk_pairs,
            on_progress=on_progress,
        )

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def save_votes(path: Path, result: JudgeResult) -> Path:
    """Keep the judge's raw votes so calibrators can be refitted without judging again."""
    with atomic_writer(Path(path), "wb") as handle:
        np.savez_compressed(
            handle, ids=np.array(result.ids), vote_logprobs=result.vote_logprobs, truncated=result.truncated
        )
    return Path(path)


def load_votes(path: Path, ids: list[str]) -> JudgeResult:
    with np.load(Path(path)) as stored:
        stored_ids = [str(value) for value in stored["ids"]]
        position = {row_id: index for index, row_id in enumerate(stored_ids)}
        missing = [row_id for row_id in ids if row_id not in position]
        if missing:
            raise ValueError(f"{path} holds no votes for {len(missing)} id(s), e.g. {missing[:3]}; judge them again")
        rows = [position[row_id] for row_id in ids]
        return JudgeResult(
            ids=ids,
            vote_logprobs=stored["vote_logprobs"][rows],
            truncated=stored["truncated"][rows],
            seconds=0.0,
            prompt_tokens=0,
        )


@dataclass
class Prediction:
    probabilities: np.ndarray
    judge_result: JudgeResult
    calibrated: bool

    def summary(self) -> dict:
        result = self.judge_result
        return {
            "rows": len(result.ids),
            "truncated_rows": int(result.truncated.sum()),
            "orders": result.n_orders,
            "calibrated": self.calibrated,
            "judge_seconds": round(result.seconds, 2),
            "pairs_per_second": round(len(result.ids) / result.seconds, 3) if result.seconds else None,
            "prompt_tokens": result.prompt_tokens,
        }


def predict_dataset(
    dataset: ArenaDataset,
    judge: Judge,
    *,
    calibrator: Calibrator | None = None,
    tta: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Prediction:
    """Judge every pair; calibrated probabilities when a calibrator is given, else the raw vote softmax."""
    result = judge.judge(dataset.pairs, tta=tta, on_progress=on_progress)
    if calibrator is None:
        probabilities = result.raw_probabilities
    else:
        probabilities = calibrator.predict(result.vote_logprobs, dataset.pairs)
    return Prediction(probabilities=probabilities, judge_result=result, calibrated=calibrator is not None)


def write_prediction(path: Path, dataset: ArenaDataset, prediction: Prediction, *, floor: float) -> Path:
    return write_submission(path, dataset.ids, prediction.probabilities, floor=floor)


def calibrate_dataset(
    dataset: ArenaDataset,
    judge_result: JudgeResult,
    *,
    method: str,
    description: dict,
) -> Calibrator:
    if dataset.labels is None:
        raise ValueError("calibration needs labelled data (winner_model_a, winner_model_b, winner_tie)")
    started = time.perf_counter()
    calibrator = fit_calibrator(
        judge_result.vote_logprobs, dataset.pairs, dataset.labels, method=method, fitted_on=dict(description)
    )
    log.info("calibrator (%s) fitted in %.1fs", method, time.perf_counter() - started)
    return calibrator
