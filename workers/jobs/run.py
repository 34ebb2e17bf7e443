"""What every job step shares: stopping on cancel or deadline, publishing its files together."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from shared.settings import Settings

log = logging.getLogger(__name__)


class JobCancelledError(RuntimeError):
    """The job was cancelled (or failed elsewhere) while this step ran; stop without publishing anything."""


class ArtifactWriteError(OSError):
    """A job's files could not be written to shared storage (full, read-only, permissions)."""


def job_time_limit_s(settings: Settings, params: dict) -> int:
    """The job's own time limit when it asked for one, never more than the server's JOB_TIME_LIMIT_S."""
    return min(params.get("time_limit_s") or settings.JOB_TIME_LIMIT_S, settings.JOB_TIME_LIMIT_S)


def publish_together(output_dir: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Write every file to a staged name, then publish them all; on any error none of them is left visible.

    A file that exists already (an earlier or concurrent delivery of the same step) is kept, never replaced.
    """
    if all((output_dir / name).exists() for name in writers):
        log.warning("the files of %s exist already; keeping them", output_dir.name)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    published: list[Path] = []
    try:
        for name, write in writers.items():
            staged[name] = output_dir / f".{name}.{uuid.uuid4().hex}.staged"
            write(staged[name])
        for name, path in staged.items():
            try:
                os.link(path, output_dir / name)  # atomic, and unlike a rename it fails when the file exists
                published.append(output_dir / name)
            except FileExistsError:
                log.warning("%s/%s was written concurrently; keeping that one", output_dir.name, name)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
