"""The calibration file (`arena calibrate`, a train job's calibration.json): its schema and what it needs of a judge.

Both sides use these rules: the worker's loader (workers/predictor/calibration.py: Calibrator.load) reads a file
through `read_calibration_file`, and the gateway checks a request's calibration with it and `calibration_misfit`
before it answers 202, so a file the worker would refuse is a 422 now, not a job that fails three times later.
Plain JSON and Python only: the gateway imports no numpy-heavy worker code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from shared.artifacts import ADAPTER_CONFIG_NAME, CALIBRATION_NAME, TEXT_MODEL_NAME
from shared.errors import UserError
from shared.storage import is_text_predictor

CALIBRATION_FORMAT = "arena-pref-calibration/1"
CALIBRATION_METHODS = ("logistic", "temperature")
# What a calibrator reads: criterion votes, a classifier adapter's logits, the text model's output, lengths.
CALIBRATION_INPUTS = ("votes", "adapter", "text", "length")
N_CLASSES = 3  # (A, B, tie)
# A calibrator holds 3 × (a few hundred features) numbers; a file far larger is not one.
MAX_CALIBRATION_BYTES = 8 * 1024 * 1024
_FIELDS = {
    "method",
    "n_orders",
    "feature_names",
    "mean",
    "scale",
    "coef",
    "intercept",
    "regularisation",
    "fitted_on",
    "inputs",
}
_REQUIRED = _FIELDS - {"inputs"}


class CalibrationFileError(UserError, ValueError):
    """A calibration file that cannot be used (as asked); the message names the file and what to do."""


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value, length: int | None = None) -> bool:
    return isinstance(value, list) and all(map(_is_number, value)) and (length is None or len(value) == length)


def default_inputs(method: str) -> list[str]:
    """What a file written before `inputs` existed reads: votes (+ length features for logistic)."""
    return ["votes", "length"] if method == "logistic" else ["votes"]


def validate_calibration(data, *, name: str) -> dict:
    """The fields of a calibration file's JSON (without `format`), checked to be a calibrator the worker can apply.

    Args:
        data: the parsed JSON.
        name: how messages name the file (relative to SHARED_DIR; never a host path).

    Raises:
        CalibrationFileError: another format, missing or unknown fields, or values of the wrong type or shape.
    """
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise CalibrationFileError(f"{name} is not an arena-pref calibration file ({CALIBRATION_FORMAT})")
    fields = {key: value for key, value in data.items() if key != "format"}
    missing, unknown = sorted(_REQUIRED - fields.keys()), sorted(fields.keys() - _FIELDS)
    if missing or unknown:
        what = ", ".join([*(f"missing {key}" for key in missing), *(f"unknown {key[:40]!r}" for key in unknown[:5])])
        raise CalibrationFileError(f"{name} is incomplete or from another version ({what}); refit it")

    def wrong(field: str, expected: str) -> CalibrationFileError:
        return CalibrationFileError(f"{name}: {field} must be {expected}; refit it with `arena calibrate`")

    method = fields["method"]
    if method not in CALIBRATION_METHODS:
        raise wrong("method", f"one of {list(CALIBRATION_METHODS)}")
    if fields["n_orders"] not in (1, 2) or isinstance(fields["n_orders"], bool):
        raise wrong("n_orders", "1 or 2")
    names = fields["feature_names"]
    if not isinstance(names, list) or not all(isinstance(feature, str) for feature in names):
        raise wrong("feature_names", "a list of names")
    for field in ("mean", "scale"):
        if not _numbers(fields[field], len(names)):
            raise wrong(field, f"{len(names)} finite numbers (one per feature)")
    coef = fields["coef"]
    if method == "temperature":
        if not (isinstance(coef, list) and len(coef) == 1 and _numbers(coef[0], 1)):
            raise wrong("coef", "[[1 / temperature]] for method temperature")
    elif not (isinstance(coef, list) and len(coef) == N_CLASSES and all(_numbers(row, len(names)) for row in coef)):
        raise wrong("coef", f"{N_CLASSES} rows of {len(names)} finite numbers")
    if not _numbers(fields["intercept"], N_CLASSES):
        raise wrong("intercept", f"{N_CLASSES} finite numbers")
    if fields["regularisation"] is not None and not _is_number(fields["regularisation"]):
        raise wrong("regularisation", "a number or null")
    if not isinstance(fields["fitted_on"], dict):
        raise wrong("fitted_on", "an object")
    inputs = fields.get("inputs") or default_inputs(method)
    if not isinstance(inputs, list) or not inputs or not set(inputs) <= set(CALIBRATION_INPUTS):
        raise wrong("inputs", f"a list of {list(CALIBRATION_INPUTS)}")
    if method == "temperature" and not {"votes", "adapter"} & set(inputs):
        raise wrong("inputs", "votes or adapter for method temperature")
    return fields


def read_calibration_file(path: Path, *, name: str | None = None) -> dict:
    """The checked fields of the calibration file at `path` (see `validate_calibration`).

    Raises:
        CalibrationFileError: missing, not JSON, too large, or not a calibrator.
    """
    path = Path(path)
    name = name or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_CALIBRATION_BYTES:
            raise CalibrationFileError(f"{name} is {size} bytes, too large for a calibration file; refit it")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CalibrationFileError(f"calibration file {name} not found; create one with `arena calibrate`") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise CalibrationFileError(f"calibration file {name} is not valid JSON ({detail})") from None
    except OSError:
        raise CalibrationFileError(f"calibration file {name} cannot be read") from None
    return validate_calibration(data, name=name)


def calibration_misfit(
    fields: dict, *, name: str, tta: bool, votes: bool, adapter_logits: bool, text: bool, tta_hint: str
) -> str | None:
    """Why a judge that produces what is given cannot feed this calibrator (None: it can).

    Args:
        fields: from `read_calibration_file`.
        name: how the message names the file.
        tta: whether the judge sees both orders.
        votes, adapter_logits, text: whether the judge casts criterion votes, has a classifier adapter's logits,
            and a text model's output (an adapter folder with text_model.json).
        tta_hint: what to change so the orders match (the CLI's or the API's words), given the file's order count
            in `{n_orders}` and `{tta}` (true for 2 orders).
    """
    inputs = set(fields.get("inputs") or default_inputs(fields["method"]))
    n_orders = fields["n_orders"]
    if {"votes", "adapter"} & inputs and n_orders != (2 if tta else 1):
        hint = tta_hint.format(n_orders=n_orders, tta="true" if n_orders == 2 else "false")
        return f"{name} was fitted with {n_orders} order(s) per pair; {hint} or refit the calibration"
    if "adapter" in inputs and not adapter_logits:
        return (
            f"{name} stacks a trained classifier adapter; pass the adapter it was fitted with (--adapter DIR, or"
            " the job's adapter)"
        )
    if "votes" in inputs and not votes:
        return (
            f"{name} reads the criterion votes but this judge casts none (a classifier adapter or text predictor);"
            " use the calibration.json that came with the adapter, or judge without the adapter"
        )
    if "text" in inputs and not text:
        return (
            f"{name} stacks the text model of a trained adapter; pass that adapter (the folder holding"
            " text_model.json), or use a calibrator fitted without it"
        )
    return None


def adapter_kind(adapter_dir: Path | None) -> str | None:
    """What an adapter folder is to the judge: "text" (a text predictor), "classifier" (task_type SEQ_CLS, a
    trained judge head) or "lora" (a causal-LM LoRA that changes the votes); None without an adapter."""
    if adapter_dir is None:
        return None
    if is_text_predictor(adapter_dir):
        return "text"
    try:
        config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG_NAME).read_text())
    except (OSError, ValueError):
        config = {}
    return "classifier" if isinstance(config, dict) and config.get("task_type") == "SEQ_CLS" else "lora"


def applied_calibration(adapter_dir: Path | None, named: Path | None, *, raw: bool) -> Path | None:
    """The calibration file a judge applies: the one named, else (unless `raw`) the calibration.json that `arena
    train` fitted for a classifier adapter or a text predictor, when the folder has one; None: raw probabilities.

    The worker applies it (workers/predictor/predictor.py: PredictRequest) and the gateway checks it before 202, so
    both read this one rule.
    """
    if named is not None:
        return Path(named)
    if raw or adapter_kind(adapter_dir) not in ("text", "classifier"):
        return None
    own = Path(adapter_dir) / CALIBRATION_NAME
    return own if own.is_file() else None


def check_judge_calibration(path: Path, *, name: str, adapter_dir: Path | None, tta: bool) -> None:
    """Refuse, before any judging, a calibration file the judge of a request could not feed.

    The judge follows from its adapter (workers/predictor/predictor.py: Judge.open): none or a causal-LM LoRA casts
    criterion votes; a classifier adapter (task_type SEQ_CLS) gives its logits, plus its text model's output when
    the folder holds text_model.json; a text predictor gives only the text model's output.

    Args:
        path: the calibration file.
        name: how messages name it (relative to SHARED_DIR).
        adapter_dir: the request's adapter folder, or None.
        tta: whether the judge sees both orders.

    Raises:
        CalibrationFileError: the file is not a calibrator, or this judge cannot feed it.
    """
    fields = read_calibration_file(path, name=name)
    kind = adapter_kind(adapter_dir)
    misfit = calibration_misfit(
        fields,
        name=name,
        tta=tta,
        votes=kind in (None, "lora"),
        adapter_logits=kind == "classifier",
        text=adapter_dir is not None and (adapter_dir / TEXT_MODEL_NAME).is_file(),
        tta_hint="set tta={tta}",
    )
    if misfit is not None:
        raise CalibrationFileError(misfit)
