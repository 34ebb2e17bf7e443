"""Layout of the shared volume and atomic file writes (both sides import this)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from shared.artifacts import (
    ADAPTER_CONFIG_NAME,
    ADAPTERS_DIR_NAME,
    DATASET_CSV_NAME,
    DATASETS_DIR_NAME,
    JOBS_DIR_NAME,
    MODEL_CONFIG_NAME,
    MODELS_DIR_NAME,
    SUBMISSIONS_DIR_NAME,
    SYNTH_DIR_NAME,
    TEXT_MODEL_NAME,
)
from shared.errors import UserError

STORAGE_SUBDIRS = (
    DATASETS_DIR_NAME,
    MODELS_DIR_NAME,
    ADAPTERS_DIR_NAME,
    SYNTH_DIR_NAME,
    SUBMISSIONS_DIR_NAME,
    JOBS_DIR_NAME,
)


def ensure_layout(shared_dir: Path) -> None:
    for name in STORAGE_SUBDIRS:
        (shared_dir / name).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _staged_file(path: Path, mode: str, open_kwargs: dict) -> Iterator[tuple[IO, str]]:
    """A temp file beside `path`, yielded with its name; flushed and fsynced when the caller's block ends. The
    caller publishes it (rename or link) after its `with` block; the temp name is removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle, tmp_name
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Write to a temp file beside `path`, then rename over it: readers never see a half file.

    On any error the temp file is removed and whatever was at `path` before stays untouched.
    """
    with _staged_file(path, mode, open_kwargs) as (handle, tmp_name):
        yield handle
    try:
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def replace_folder(target_dir: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a staging folder beside `target_dir`, then put it in place of whatever was there; on any error the
    staging folder is removed and `target_dir` is left as it was."""
    target_dir = Path(target_dir)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        fill(staging)
        if target_dir.exists():
            shutil.rmtree(target_dir)
        os.replace(staging, target_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target_dir


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to `source` at `target`, or a copy when links are not possible (another file system)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class UnsafePathError(UserError, ValueError):
    """A user-supplied name would resolve outside the folder it must stay in."""


# An absolute path inside free text: a slash that does not continue a word, a relative path or a URL, then at
# least two components. API routes (/v1/jobs/...) are addresses, not host paths, and stay.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?!v1/)(?:[\w.@+~-]+/)+[\w.@+~-]*")


def _shared_roots(shared_dir: Path) -> list[str]:
    """SHARED_DIR as configured, as an absolute path and through its links, longest first."""
    shared_dir = Path(shared_dir)
    roots = {str(shared_dir), os.path.abspath(shared_dir), str(shared_dir.resolve())}
    return sorted((root.rstrip("/") for root in roots if root.strip("/")), key=len, reverse=True)


def public_path(path: str | Path, shared_dir: Path) -> str:
    """How a path is shown outside the host: relative to SHARED_DIR when it lies there (`models/x`, the name a
    request uses), otherwise only its last component (`SmolLM2-135M-Instruct`). The one rule for every answer,
    job record and artefact: clients never see the host's layout."""
    text = str(path)
    for root in _shared_roots(shared_dir):
        if text == root:
            return "SHARED_DIR"
        if text.startswith(root + "/"):
            return text[len(root) + 1 :].rstrip("/")
    if not text.startswith("/"):
        return text
    return Path(text).name or text


def redact_host_paths(value, shared_dir: Path):
    """`value` (a string, or dicts and lists of them, as JSON holds) with every absolute path in it written by
    `public_path`: SHARED_DIR/... relative to SHARED_DIR, any other absolute path as its last component.

    The last guard before something reaches a client: job errors (exception text), results, summaries, metrics.
    """
    if isinstance(value, str):
        text = value
        for root in _shared_roots(shared_dir):  # first, so a SHARED_DIR with unusual characters is caught too
            text = text.replace(root + "/", "")
        return _ABSOLUTE_PATH.sub(lambda match: public_path(match.group(0), shared_dir), text)
    if isinstance(value, dict):
        return {key: redact_host_paths(item, shared_dir) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_host_paths(item, shared_dir) for item in value]
    return value


class JudgeOptionsError(UserError, ValueError):
    """A request's judge options contradict each other or ask for something that would be silently bad."""


def is_text_predictor(folder: Path) -> bool:
    """A trained predictor without an LLM: a text model (+ its calibrator), no LoRA adapter files."""
    return (Path(folder) / TEXT_MODEL_NAME).is_file() and not (Path(folder) / ADAPTER_CONFIG_NAME).is_file()


def new_id() -> str:
    """A fresh dataset/job id: 32 hex digits, never reused."""
    return uuid.uuid4().hex


def resolve_inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing absolute paths, `..`, and symlinks that lead outside `root`."""
    root = Path(root).resolve()
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts or not relative.strip():
        raise UnsafePathError(f"{relative!r} must be a relative path inside {root.name}/, without '..'")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise UnsafePathError(f"{relative!r} resolves outside {root.name}/")
    return resolved


@contextlib.contextmanager
def atomic_creator(path: Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Like `atomic_writer`, but never replaces an existing file: raises FileExistsError instead.

    The finished temp file is hard-linked into place, which fails atomically when `path` exists, so a
    repeated or concurrent job step cannot overwrite what an earlier one published.
    """
    with _staged_file(path, mode, open_kwargs) as (handle, tmp_name):
        yield handle
    try:
        os.link(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path`, held for the `with` block; serialises read-modify-write."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def dataset_dir(shared_dir: Path, dataset_id: str) -> Path:
    """SHARED_DIR/datasets/<id>/ holds dataset.csv (as uploaded) and meta.json."""
    return Path(shared_dir) / DATASETS_DIR_NAME / dataset_id


def dataset_csv_path(shared_dir: Path, dataset_id: str) -> Path:
    return dataset_dir(shared_dir, dataset_id) / DATASET_CSV_NAME


def job_record_path(shared_dir: Path, job_id: str) -> Path:
    return Path(shared_dir) / JOBS_DIR_NAME / f"{job_id}.json"


def job_output_dir(shared_dir: Path, job_id: str) -> Path:
    """SHARED_DIR/submissions/<job_id>/: the job's artefacts (submission.csv, metrics.json) and chunks/."""
    return Path(shared_dir) / SUBMISSIONS_DIR_NAME / job_id


def default_predictor_dir(shared_dir: Path, name: str) -> Path:
    """`models/<name>/`, the default predictor, checked to hold a text model.

    Raises:
        FileNotFoundError: it is missing; the message says how to make it.
    """
    predictor_dir = resolve_inside(Path(shared_dir) / MODELS_DIR_NAME, name)
    if not is_text_predictor(predictor_dir):
        raise FileNotFoundError(
            f"the default predictor models/{name}/ is missing (no {TEXT_MODEL_NAME}); run `make setup`, or fit one"
            f" from a labelled CSV: `arena train --text-only --input FILE.csv --output-dir $SHARED_DIR/models/{name}`"
        )
    return predictor_dir


def resolve_judge_files(
    shared_dir: Path,
    default_model_path: str,
    *,
    model: str | None = None,
    adapter: str | None = None,
    calibration: str | None = None,
    raw: bool = False,
    default_predictor: str | None = None,
) -> tuple[Path, Path | None, Path | None]:
    """The model folder, adapter (or predictor) folder and calibration file a job names, checked to exist.

    A request that names no adapter and no calibration, and does not ask for `raw` votes, gets the default
    predictor (`models/<default_predictor>/`, a text model with its calibrator): the criterion votes of an
    uncalibrated judge are worse than a uniform guess, so nobody gets them without asking.

    Args:
        shared_dir: SHARED_DIR.
        default_model_path: the model used when `model` is None (settings.judge_model_path).
        model: a folder name under models/.
        adapter: a folder name under adapters/: a LoRA judge from `arena train`, or a text predictor.
        calibration: a JSON file relative to SHARED_DIR, under models/ or adapters/.
        raw: the judge's uncalibrated criterion votes, as asked for.
        default_predictor: folder name under models/ of the default predictor (settings.DEFAULT_PREDICTOR);
            None: no default, a request without adapter or calibration gets raw votes (the CLI's --raw).

    Raises:
        UnsafePathError: a name points outside its folder.
        JudgeOptionsError: the options contradict each other.
        FileNotFoundError: the folder or file does not exist; the message lists what does.
    """
    shared_dir = Path(shared_dir)

    def available(folder: Path, *markers: str) -> list[str]:
        return sorted({path.parent.name for marker in markers for path in folder.glob(f"*/{marker}")})

    if raw and calibration is not None:
        raise JudgeOptionsError("raw=true asks for uncalibrated votes but a calibration was given; drop one of them")
    wants_default = not raw and adapter is None and calibration is None and default_predictor is not None
    if wants_default and model is None:
        return Path(default_model_path), default_predictor_dir(shared_dir, default_predictor), None
    if model is None:
        model_dir = Path(default_model_path)
    else:
        model_dir = resolve_inside(shared_dir / MODELS_DIR_NAME, model)
    adapter_dir = None
    if adapter is not None:
        adapter_dir = resolve_inside(shared_dir / ADAPTERS_DIR_NAME, adapter)
        if not (adapter_dir / ADAPTER_CONFIG_NAME).is_file() and not is_text_predictor(adapter_dir):
            raise FileNotFoundError(
                f"adapter {adapter!r} not found (no adapters/{adapter}/{ADAPTER_CONFIG_NAME} or {TEXT_MODEL_NAME});"
                f" available: {available(shared_dir / ADAPTERS_DIR_NAME, ADAPTER_CONFIG_NAME, TEXT_MODEL_NAME)}"
            )
    if (
        not (adapter_dir is not None and is_text_predictor(adapter_dir))
        and not (model_dir / MODEL_CONFIG_NAME).is_file()
    ):
        # Named, never shown as a host path: this message reaches API clients.
        what = f"model {model!r}" if model else f"the default judge model ({model_dir.name}, MODEL_PATH)"
        raise FileNotFoundError(
            f"{what} not found: no {MODEL_CONFIG_NAME} in {model_dir.name}/; available under {MODELS_DIR_NAME}/:"
            f" {available(shared_dir / MODELS_DIR_NAME, MODEL_CONFIG_NAME)} (the default model needs `make setup`)"
        )
    calibration_path = None
    if calibration is not None:
        calibration_path = resolve_inside(shared_dir, calibration)
        if Path(calibration).parts[0] not in (MODELS_DIR_NAME, ADAPTERS_DIR_NAME):
            raise UnsafePathError(f"calibration {calibration!r} must lie under models/ or adapters/")
        if not calibration_path.is_file():
            raise FileNotFoundError(f"calibration file {calibration!r} not found under SHARED_DIR")
    if wants_default:
        raise JudgeOptionsError(
            f"model {model!r} without a calibration would write its raw criterion votes, which score worse than a"
            " uniform guess; give a calibration (`arena calibrate`), or raw=true to get the raw votes anyway"
        )
    return model_dir, adapter_dir, calibration_path
