"""The judge a request names: its files resolved, its calibrator checked, loaded once per worker process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.artifacts import CALIBRATION_NAME
from shared.settings import Settings
from shared.storage import is_text_predictor, resolve_judge_files
from workers.judge.engines import ModelNotFoundError

log = logging.getLogger(__name__)

_JUDGES: dict[tuple, object] = {}


def cached_judge(settings: Settings, *, model_path: Path, adapter_dir: Path | None):
    """The judge for (model, adapter, engine), loaded on first use and reused by every later task.

    Only one judge is kept: asking for another closes the previous one (a GPU holds one engine at a time).
    """
    from workers.stacking.predictor import Judge

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
                raw=bool(params.get("raw", False)),
                default_predictor=settings.DEFAULT_PREDICTOR,
            )
        except FileNotFoundError as exc:
            raise ModelNotFoundError(str(exc)) from None
        return cls(
            model_path, adapter_dir, calibration_for(adapter_dir, calibration_path), bool(params.get("tta", True))
        )

    def load_calibrator(self):
        """The calibrator, checked against the judge's order count before any judging is spent."""
        return load_calibrator(
            self.calibration_path,
            tta=self.tta,
            adapter_dir=self.adapter_dir,
            tta_hint=lambda n_orders: f"set tta={'true' if n_orders == 2 else 'false'}",
        )


def calibration_for(adapter_dir: str | Path | None, requested: str | Path | None) -> Path | None:
    """The calibration a judge uses: the one asked for, else the one `arena train` fitted for a classifier adapter
    or a text predictor, when there is one (None for raw probabilities)."""
    if requested is not None:
        return Path(requested)
    from workers.judge.classifier import is_classifier_adapter

    if adapter_dir is None or not (is_text_predictor(Path(adapter_dir)) or is_classifier_adapter(adapter_dir)):
        return None
    path = Path(adapter_dir) / CALIBRATION_NAME
    return path if path.is_file() else None


def load_calibrator(path: Path | None, *, tta: bool, adapter_dir: str | Path | None, tta_hint: Callable[[int], str]):
    """The calibrator at `path` (None: none), refused before any judging when the judge cannot feed it.

    Args:
        path: the calibration file, or None.
        tta: whether the judge will see both orders.
        adapter_dir: the judge's adapter (a calibrator that stacks a classifier needs one).
        tta_hint: what to change so the orders match, given the calibrator's order count (CLI or job words).

    Raises:
        CalibrationError: the file is unusable with this judge; the message says what to change.
    """
    if path is None:
        return None
    from workers.judge.classifier import is_classifier_adapter
    from workers.stacking.calibration import CalibrationError, Calibrator

    calibrator = Calibrator.load(path)
    if calibrator.reads_orders and calibrator.n_orders != (2 if tta else 1):
        hint = tta_hint(calibrator.n_orders)
        raise CalibrationError(
            f"{Path(path).name} was fitted with {calibrator.n_orders} order(s) per pair; {hint} or refit"
            " the calibration"
        )
    if calibrator.needs_adapter and not is_classifier_adapter(adapter_dir):
        raise CalibrationError(
            f"{Path(path).name} stacks a trained classifier adapter; pass the adapter it was fitted with"
            " (--adapter DIR, or the job's adapter)"
        )
    return calibrator
