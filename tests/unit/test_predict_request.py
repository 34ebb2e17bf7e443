"""The one predict path's rules, asked from the command line and from a job alike: the default predictor, the
refusal of a model without a calibration, an adapter's own calibration (none with raw), calibrator misfits refused
before any judging in the asker's words, and one cached judge per worker process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.arena_csv import Pair
from shared.settings import Settings
from shared.storage import JudgeOptionsError
from workers.judge.votes import JudgeResult
from workers.predictor import predictor as predictor_module
from workers.predictor.calibration import CalibrationError, fit_calibrator
from workers.predictor.predictor import Predictor, PredictRequest


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    shared_dir = tmp_path / "shared"
    model = shared_dir / "models" / "SmolLM2-135M-Instruct"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    default = shared_dir / "models" / "default"
    default.mkdir()
    (default / "text_model.json").write_text("{}")
    (default / "calibration.json").write_text("{}")
    adapter = shared_dir / "adapters" / "judge"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    (adapter / "calibration.json").write_text("{}")
    return Settings(SHARED_DIR=shared_dir, API_KEY=None, MODEL_PATH=str(model), _env_file=None)


def votes_calibration(path: Path, *, n_orders: int = 2) -> Path:
    """A calibrator of the criterion votes, fitted on a few synthetic rows."""
    rng = np.random.default_rng(0)
    pairs = [Pair(str(i), (f"prompt {i}",), ("a" * (1 + i),), ("b" * (40 - i),)) for i in range(40)]
    votes = np.log(rng.dirichlet(np.ones(4), size=(40, n_orders, 5)))
    labels = np.eye(3)[rng.integers(0, 3, size=40)]
    return fit_calibrator(votes, pairs, labels).save(path)


def test_a_plain_request_gets_the_default_predictor_from_the_cli_and_from_a_job(settings):
    default = settings.SHARED_DIR / "models" / "default"
    for request in (PredictRequest.from_cli(settings), PredictRequest.from_params(settings, {})):
        assert request.adapter_dir == default and request.calibration_path == default / "calibration.json"
    # Votes read from a file are what the user asked to see: no default predictor for them.
    saved = PredictRequest.from_cli(settings, saved_votes=True)
    assert saved.adapter_dir is None and saved.calibration_path is None


def test_a_model_without_a_calibration_is_refused_in_the_askers_words(settings):
    with pytest.raises(JudgeOptionsError, match="--raw to get the raw votes"):
        PredictRequest.from_cli(settings, model=settings.MODEL_PATH)
    with pytest.raises(JudgeOptionsError, match="raw=true"):
        PredictRequest.from_params(settings, {"model": "SmolLM2-135M-Instruct"})
    assert PredictRequest.from_cli(settings, model=settings.MODEL_PATH, raw=True).calibration_path is None


def test_an_adapter_brings_its_own_calibration_unless_raw_on_both_sides(settings):
    adapter = settings.SHARED_DIR / "adapters" / "judge"
    own = adapter / "calibration.json"
    assert PredictRequest.from_cli(settings, adapter=adapter).calibration_path == own
    assert PredictRequest.from_params(settings, {"adapter": "judge"}).calibration_path == own
    assert PredictRequest.from_cli(settings, adapter=adapter, raw=True).calibration_path is None
    assert PredictRequest.from_params(settings, {"adapter": "judge", "raw": True}).calibration_path is None
    # On the command line a named calibration wins even with --raw (a job refuses the pair: "drop one").
    named = settings.SHARED_DIR / "models" / "mine.json"
    assert PredictRequest.from_cli(settings, calibration=named, raw=True).calibration_path == named


def test_a_misfit_calibrator_is_refused_before_judging_in_the_askers_words(settings):
    votes_calibration(settings.SHARED_DIR / "models" / "votes.json")
    cli = PredictRequest.from_cli(settings, calibration=settings.SHARED_DIR / "models" / "votes.json", tta=False)
    with pytest.raises(CalibrationError, match="drop --no-tta"):
        Predictor.for_saved_votes(cli)
    job = PredictRequest.from_params(settings, {"calibration": "models/votes.json", "tta": False})
    with pytest.raises(CalibrationError, match="set tta=true"):
        Predictor.for_saved_votes(job)


def test_apply_gives_the_calibrated_or_the_raw_probabilities(settings):
    calibration = votes_calibration(settings.SHARED_DIR / "models" / "votes.json")
    rng = np.random.default_rng(1)
    pairs = [Pair(str(i), ("q",), ("a" * (i + 1),), ("b",)) for i in range(4)]
    result = JudgeResult(
        ids=[pair.id for pair in pairs],
        vote_logprobs=np.log(rng.dirichlet(np.ones(4), size=(4, 2, 5))),
        truncated=np.zeros(4, dtype=bool),
        seconds=1.0,
        prompt_tokens=0,
    )
    raw = Predictor.for_saved_votes(PredictRequest.from_cli(settings, raw=True)).apply(result, pairs)
    assert not raw.calibrated and np.allclose(raw.probabilities, result.raw_probabilities)
    calibrated = Predictor.for_saved_votes(PredictRequest.from_cli(settings, calibration=calibration)).apply(
        result, pairs
    )
    assert calibrated.calibrated and not np.allclose(calibrated.probabilities, raw.probabilities)
    np.testing.assert_allclose(calibrated.probabilities.sum(axis=1), 1.0)


class FakeJudge:
    def __init__(self, options: dict):
        self.options = options
        self.engine, self.classifier, self.text_model = object(), None, None
        self.description = {"adapter": options["adapter_dir"]}
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_worker_keeps_one_judge_and_casts_the_votes_its_calibrator_reads(settings, monkeypatch):
    opened: list[FakeJudge] = []

    def open_judge(cls, _settings, **options):
        opened.append(FakeJudge(options))
        return opened[-1]

    monkeypatch.setattr(predictor_module.Judge, "open", classmethod(open_judge))
    monkeypatch.setattr(predictor_module, "_CACHED_JUDGES", {})
    raw = PredictRequest.from_params(settings, {"raw": True})
    first = Predictor.cached(settings, raw)
    assert Predictor.cached(settings, raw).judge is first.judge and len(opened) == 1
    assert first.judge.options["with_votes"] is False

    calibration = votes_calibration(settings.SHARED_DIR / "models" / "votes.json")
    stacked = PredictRequest.from_cli(settings, calibration=calibration)
    second = Predictor.cached(settings, stacked)
    assert second.judge.options["with_votes"] is True  # the calibrator reads the criterion votes
    assert first.judge.closed and not second.judge.closed  # one engine per worker
    predictor_module.close_cached_judges()
    assert second.judge.closed


def test_an_opened_predictor_closes_its_judge_and_a_cached_one_does_not(settings, monkeypatch):
    open_judge = classmethod(lambda cls, _settings, **options: FakeJudge(options))
    monkeypatch.setattr(predictor_module.Judge, "open", open_judge)
    monkeypatch.setattr(predictor_module, "_CACHED_JUDGES", {})
    request = PredictRequest.from_params(settings, {"raw": True})
    with Predictor.open(settings, request) as predictor:
        pass
    assert predictor.judge.closed
    cached = Predictor.cached(settings, request)
    cached.close()
    assert not cached.judge.closed
    predictor_module.close_cached_judges()
