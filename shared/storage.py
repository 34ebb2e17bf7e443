"""Layout of the shared volume and atomic file writes (both sides import this)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from shared.artifacts import ADAPTER_CONFIG_NAME, DATASET_CSV_NAME
from shared.errors import UserError

STORAGE_SUBDIRS = ("datasets", "models", "adapters", "synth", "submissions", "jobs")


def ensure_layout(shared_dir: Path) -> None:
    for name in STORAGE_SUBDIRS:
        (shared_dir / name).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Write to a temp file beside `path`, then rename over it: readers never see a half file.

    On any error the temp file is removed and whatever was at `path` before stays untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
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


def relative_to_shared(text: str, shared_dir: Path) -> str:
    """`text` with every SHARED_DIR/… path written relative to SHARED_DIR (adapters/x, not /srv/…/adapters/x).

    Job errors are shown to API clients; the host's layout is not theirs to see, and the relative name is the
    one they use in requests.
    """
    shared_dir = Path(shared_dir)
    for root in dict.fromkeys((str(shared_dir.resolve()), str(shared_dir))):  # as configured, and through links
        text = text.replace(root.rstrip("/") + "/", "")
    return text


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
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
    return Path(shared_dir) / "datasets" / dataset_id


def dataset_csv_path(shared_dir: Path, dataset_id: str) -> Path:
    return dataset_dir(shared_dir, dataset_id) / DATASET_CSV_NAME


def job_record_path(shared_dir: Path, job_id: str) -> Path:
    return Path(shared_dir) / "jobs" / f"{job_id}.json"


def job_output_dir(shared_dir: Path, job_id: str) -> Path:
    """SHARED_DIR/submissions/<job_id>/: the job's artefacts (submission.csv, metrics.json) and shards/."""
    return Path(shared_dir) / "submissions" / job_id


def resolve_judge_files(
    shared_dir: Path,
    default_model_path: str,
    *,
    model: str | None = None,
    adapter: str | None = None,
    calibration: str | None = None,
) -> tuple[Path, Path | None, Path | None]:
    """The model folder, adapter folder and calibration file a job names, checked to exist.

    Args:
        shared_dir: SHARED_DIR.
        default_model_path: the model used when `model` is None (settings.judge_model_path).
        model: a folder name under models/.
        adapter: a folder name under adapters/.
        calibration: a JSON file relative to SHARED_DIR, under models/ or adapters/.

    Raises:
        UnsafePathError: a name points outside its folder.
        FileNotFoundError: the folder or file does not exist; the message lists what does.
    """
    shared_dir = Path(shared_dir)

    def available(folder: Path, marker: str) -> list[str]:
        return sorted(path.parent.name for path in folder.glob(f"*/{marker}"))

    if model is None:
        model_dir = Path(default_model_path)
    else:
        model_dir = resolve_inside(shared_dir / "models", model)
    if not (model_dir / "config.json").is_file():
        # Named, never shown as a host path: this message reaches API clients.
        what = f"model {model!r}" if model else f"the default judge model ({model_dir.name}, MODEL_PATH)"
        raise FileNotFoundError(
            f"{what} not found: no config.json in {model_dir.name}/; available under"
            f" models/: {available(shared_dir / 'models', 'config.json')} (the default model needs `make setup`)"
        )
    adapter_dir = None
    if adapter is not None:
        adapter_dir = resolve_inside(shared_dir / "adapters", adapter)
        if not (adapter_dir / ADAPTER_CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"adapter {adapter!r} not found (no adapters/{adapter}/adapter_config.json); available:"
                f" {available(shared_dir / 'adapters', 'adapter_config.json')}"
            )
    calibration_path = None
    if calibration is not None:
        calibration_path = resolve_inside(shared_dir, calibration)
        if Path(calibration).parts[0] not in ("models", "adapters"):
            raise UnsafePathError(f"calibration {calibration!r} must lie under models/ or adapters/")
        if not calibration_path.is_file():
            raise FileNotFoundError(f"calibration file {calibration!r} not found under SHARED_DIR")
    return model_dir, adapter_dir, calibration_path
