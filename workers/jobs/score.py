"""The /v1/score step: probabilities for a few pairs given inline, judged by the worker's cached predictor."""

from __future__ import annotations

import time

from shared import clock
from shared.arena_csv import ArenaDataset, Pair, clean_text, normalise_probabilities
from shared.settings import Settings
from workers.jobs.run import watched_task
from workers.predictor.predictor import Predictor, PredictRequest


def _turns(value: str | list[str]) -> tuple[str, ...]:
    return tuple(clean_text(turn) for turn in ([value] if isinstance(value, str) else value))


def expired(payload: dict, *, now: float | None = None) -> dict | None:
    """The answer to a score request whose gateway stopped waiting (its `deadline`, epoch seconds, has passed),
    or None while it is still wanted. A request without a deadline (an older gateway) is always wanted."""
    deadline = payload.get("deadline")
    now = clock.now() if now is None else now
    if deadline is None or now <= float(deadline):
        return None
    return {"expired": True, "error": f"the gateway stopped waiting {now - float(deadline):.0f}s ago; not judged"}


def run_score(settings: Settings, payload: dict, *, task_id: str | None = None) -> dict:
    """Probabilities for a few pairs given inline (POST /v1/score); {"expired": ...} when nobody waits any more.

    The work after the judge is loaded (cleaning, features, judging) runs under the worker's watchdog with
    SCORE_TASK_TIME_LIMIT_S: a call that never returns stops the worker hard. Loading the judge is left out: it is
    shared with predict jobs, done once per worker, and on a GPU may take minutes by itself.
    """
    if (gone := expired(payload)) is not None:
        return gone
    started = time.perf_counter()
    predictor = Predictor.cached(settings, PredictRequest.from_params(settings, payload))
    with watched_task(task_id=task_id, time_limit_s=settings.SCORE_TASK_TIME_LIMIT_S):
        pairs = [
            Pair(
                id=str(pair.get("id") or index),
                prompt=_turns(pair["prompt"]),
                response_a=_turns(pair["response_a"]),
                response_b=_turns(pair["response_b"]),
            )
            for index, pair in enumerate(payload["pairs"])
        ]
        prediction = predictor.predict(ArenaDataset(pairs=pairs))
    probabilities = normalise_probabilities(prediction.probabilities, floor=settings.PROB_FLOOR)
    return {
        "probabilities": [
            {"id": pair.id, "winner_model_a": row[0], "winner_model_b": row[1], "winner_tie": row[2]}
            for pair, row in zip(pairs, probabilities.tolist(), strict=True)
        ],
        "seconds": round(time.perf_counter() - started, 3),
        "judge": predictor.description,
    }
