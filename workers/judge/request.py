"""The judge a request names: its files resolved, its calibrator checked, loaded once per worker process."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings
from shared.storage import resolve_judge_files
from workers.judge.engines import ModelNotFoundError

log = logging.getLogger(__name__)

_JUDGES: dict[tuple, object] = {}


def cached_judge(settings: Settings, *, model_path: Path, adapter_dir: Path | None):
    """The judge for (model, adapter, engine), loaded on first use and reused by every later task.

    Only one judge is kept: asking for another closes the previous one (a GPU holds one engine at a time).
    """
    from workers.judge.judge import Judge

    key = (str(model_path), str(adapter_dir) if adapter_dir else None, settings.JUDGE_ENGINE)
    if key not in _JUDGES:
        close_cached_judges()
        started = time.perf_counter()
        _JUDGES[key] = Judge.open(
            settings, model_path=str(model_path), adapter_dir=str(adapter_dir) if adapter_dir else None
        )
        log.info("judge %s loaded in %.1fs", key, time.perf_counter() - started)
    return _JUDGES[key]


def close_cached_judges() -> None:
    while _JUDGES:
        _, judge = _JUDGES.popitem()
        judge.close()


@dataclass
class JudgeRequest:
    model_path: Path
    adapter_dir: Path | None
    calibration_path: Path | None
    tta: bool

    @classmethod
    def from_params(cls, settings: Settings, params: dict) -> JudgeRequest:
        try:
            model_path, adapter_dir, calibration_path = resolve_judge_files(
                settings.SHARED_DIR,
                settings.judge_model_path,
                model=params.get("model"),
                adapter=params.get("adapter"),
                calibration=params.get("calibration"),
            )
        except FileNotFoundError as exc:
            raise ModelNotFoundError(str(exc)) from None
        if calibration_path is None:
            # A classifier adapter from the train job carries its own calibrator: use it unless told otherwise.
            from workers.judge.classifier import adapter_calibration_path

            calibration_path = adapter_calibration_path(adapter_dir)
        return cls(model_path, adapter_dir, calibration_path, bool(params.get("tta", True)))

    def load_calibrator(self):
        """The calibrator, checked against the judge's order count before any judging is spent."""
        if self.calibration_path is None:
            return None
        from workers.stacking.calibration import CalibrationError, Calibrator

        calibrator = Calibrator.load(self.calibration_path)
        if calibrator.n_orders != (2 if self.tta else 1):
            raise CalibrationError(
                f"{self.calibration_path.name} was fitted with {calibrator.n_orders} order(s) per pair; set"
                f" tta={'true' if calibrator.n_orders == 2 else 'false'} or refit the calibration"
            )
        return calibrator
