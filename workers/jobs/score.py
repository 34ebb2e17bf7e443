"""The /v1/score step: probabilities for a few pairs given inline, judged by the worker's cached judge."""

from __future__ import annotations

import time

from shared.arena_csv import ArenaDataset, Pair, clean_text, normalise_probabilities
from shared.settings import Settings
from workers.judge.judge import predict_dataset
from workers.judge.request import JudgeRequest, cached_judge


def _turns(value: str | list[str]) -> tuple[str, ...]:
    return tuple(clean_text(turn) for turn in ([value] if isinstance(value, str) else value))


def run_score(settings: Settings, payload: dict) -> dict:
    """Probabilities for a few pairs given inline (POST /v1/score)."""

    started = time.perf_counter()
    request = JudgeRequest.from_params(settings, payload)
    calibrator = request.load_calibrator()
    pairs = [
        Pair(
            id=str(pair.get("id") or index),
            prompt=_turns(pair["prompt"]),
            response_a=_turns(pair["response_a"]),
            response_b=_turns(pair["response_b"]),
        )
        for index, pair in enumerate(payload["pairs"])
    ]
    judge = cached_judge(settings, model_path=request.model_path, adapter_dir=request.adapter_dir)
    prediction = predict_dataset(ArenaDataset(pairs=pairs), judge, calibrator=calibrator, tta=request.tta)
    probabilities = normalise_probabilities(prediction.probabilities, floor=settings.PROB_FLOOR)
    return {
        "probabilities": [
            {"id": pair.id, "winner_model_a": row[0], "winner_model_b": row[1], "winner_tie": row[2]}
            for pair, row in zip(pairs, probabilities.tolist(), strict=True)
        ],
        "seconds": round(time.perf_counter() - started, 3),
        "judge": judge.description,
    }
