"""Trained adapters in SHARED_DIR/adapters/<name>/ as the gateway lists them (reads JSON only, no torch)."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from shared.adapter_claim import claim_tenant
from shared.artifacts import (
    ADAPTER_CONFIG_NAME,
    ADAPTERS_DIR_NAME,
    CALIBRATION_NAME,
    METRICS_NAME,
    TRAIN_JOB_OWNER_NAME,
)
from shared.schemas import NAME_PATTERN, AdapterInfo
from shared.storage import is_text_predictor, public_path


class AdapterNotFoundError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no adapter {self.name!r}; list them with GET /v1/adapters (a train job creates one)"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _newest_mtime(folder: Path) -> datetime:
    mtimes = []
    for path in folder.iterdir():
        # A training folder's temp files (atomic writes, a train job's claim being made) vanish at any moment.
        with contextlib.suppress(FileNotFoundError):
            if path.is_file():
                mtimes.append(path.stat().st_mtime)
    return datetime.fromtimestamp(max(mtimes, default=folder.stat().st_mtime), tz=UTC)


def _text_predictor_info(folder: Path, metrics: dict) -> AdapterInfo:
    out_of_fold = metrics.get("out_of_fold") or {}
    return AdapterInfo(
        name=folder.name,
        kind="text",
        task_type=None,
        complete=bool(metrics),
        calibrated_val_log_loss=metrics.get("calibrator_cv_log_loss") or out_of_fold.get("log_loss"),
        val_accuracy=out_of_fold.get("accuracy"),
        train_rows=metrics.get("rows"),
        calibration=f"adapters/{folder.name}/{CALIBRATION_NAME}" if (folder / CALIBRATION_NAME).is_file() else None,
        modified_at=_newest_mtime(folder),
        tenant=claim_tenant(folder),
    )


def adapter_info(folder: Path, shared_dir: Path) -> AdapterInfo:
    """What a folder under adapters/ holds: its PEFT task type and, once trained, its validation figures."""
    config = _read_json(folder / ADAPTER_CONFIG_NAME)
    metrics = _read_json(folder / METRICS_NAME)
    if is_text_predictor(folder):
        return _text_predictor_info(folder, metrics)
    validation = metrics.get("validation") or {}
    calibration = metrics.get("calibration") or {}
    base_model = metrics.get("base_model") or config.get("base_model_name_or_path")
    return AdapterInfo(
        name=folder.name,
        task_type=config.get("task_type"),
        base_model=public_path(base_model, shared_dir) if base_model else None,  # trainers record host paths
        complete=bool(metrics),
        val_log_loss=validation.get("log_loss"),
        val_accuracy=validation.get("accuracy"),
        calibrated_val_log_loss=calibration.get("stacked_cv_log_loss"),
        val_rows=validation.get("rows"),
        train_rows=metrics.get("train_rows"),
        steps=metrics.get("steps"),
        calibration=f"adapters/{folder.name}/{CALIBRATION_NAME}" if (folder / CALIBRATION_NAME).is_file() else None,
        modified_at=_newest_mtime(folder),
        tenant=claim_tenant(folder),
    )


def list_adapters(shared_dir: Path) -> list[AdapterInfo]:
    """Every adapter folder (one with adapter_config.json, or a train job's folder still training), newest first."""
    root = Path(shared_dir) / ADAPTERS_DIR_NAME
    infos = []
    for folder in root.iterdir() if root.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and re.match(NAME_PATTERN, folder.name):
            markers = (folder / ADAPTER_CONFIG_NAME, folder / TRAIN_JOB_OWNER_NAME)
            if any(marker.is_file() for marker in markers) or is_text_predictor(folder):
                infos.append(adapter_info(folder, shared_dir))
    return sorted(infos, key=lambda info: info.modified_at, reverse=True)


def read_adapter(shared_dir: Path, name: str) -> AdapterInfo:
    folder = Path(shared_dir) / ADAPTERS_DIR_NAME / name
    if not re.match(NAME_PATTERN, name) or not folder.is_dir():
        raise AdapterNotFoundError(name)
    return adapter_info(folder, shared_dir)
