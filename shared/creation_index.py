"""An index of creation order for the listings (GET /v1/jobs, GET /v1/datasets): a page reads only its own records.

`<root>/<tenant>/<created_at stamp>_<id>`, one empty folder per record (a folder, not a file: the index adds no file
to SHARED_DIR, so the files a request stored are still its record's own): names alone sort newest first, so a listing
lists names (cheap), starts after its cursor and reads records one by one until its page is full. A marker is made
before its record and removed after it, so a record is never missing from a listing; a marker without its record
(mid-creation, mid-deletion, a crash in between) is skipped when read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from shared.storage import file_lock

NO_TENANT = "_none"  # records made before tenants; not a tenant name (those start with a letter or digit)


class Indexed(Protocol):
    id: str
    created_at: datetime
    tenant: str | None


Item = TypeVar("Item", bound=Indexed)


def marker_name(created_at: datetime, item_id: str) -> str:
    """`YYYYmmddTHHMMSS.ffffffZ_<id>` in UTC: fixed width, so names sort as (created_at, id) do."""
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    moment = created_at.astimezone(UTC)
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}{moment.minute:02d}"
        f"{moment.second:02d}.{moment.microsecond:06d}Z_{item_id}"
    )


class CreationIndex:
    """The creation-order index under `root`.

    Args:
        root: its folder (made by the first use, from `scan`).
        lock: the file lock held while it is built.
        scan: every record as it stands, read once to build the index of a SHARED_DIR written before it existed.
    """

    def __init__(self, root: Path, *, lock: Path, scan: Callable[[], Iterable[Indexed]]) -> None:
        self.root = Path(root)
        self.lock = Path(lock)
        self.scan = scan

    def _built_root(self) -> Path:
        if not self.root.is_dir():
            self._build()
        return self.root

    def _build(self) -> None:
        """Once per SHARED_DIR: written aside and renamed into place, so the root's existence means complete."""
        with file_lock(self.lock):
            if self.root.is_dir():
                return
            building = self.root.with_name(f"{self.root.name}.building")
            shutil.rmtree(building, ignore_errors=True)  # a build that died midway; the lock says none runs now
            building.mkdir(parents=True)
            for item in self.scan():
                folder = building / (item.tenant or NO_TENANT)
                folder.mkdir(exist_ok=True)
                (folder / marker_name(item.created_at, item.id)).mkdir(exist_ok=True)
            building.rename(self.root)

    def _marker(self, item: Indexed) -> Path:
        return self.root / (item.tenant or NO_TENANT) / marker_name(item.created_at, item.id)

    def add(self, item: Indexed) -> None:
        """Index `item`; call before its record is written."""
        self._built_root()
        self._marker(item).mkdir(parents=True, exist_ok=True)

    def remove(self, item: Indexed) -> None:
        """Drop `item`'s marker; call after its record is removed."""
        with contextlib.suppress(OSError):
            self._marker(item).rmdir()

    def remove_id(self, item_id: str) -> None:
        """Drop every marker of `item_id` when its record could not be read (all names are listed: rare)."""
        for marker in self.root.glob(f"*/*_{item_id}"):
            with contextlib.suppress(OSError):
                marker.rmdir()

    def newest_first(
        self, read: Callable[[str], Item], *, tenant: str | None, after: tuple[datetime, str] | None = None
    ) -> Iterator[Item]:
        """Records newest first, read one at a time as the caller asks for them.

        Args:
            read: reads a record by id; KeyError, OSError or ValueError skip it (gone, or being replaced).
            tenant: only this tenant's records; None: everyone's.
            after: (created_at, id) of a record: only older ones.
        """
        root = self._built_root()
        folders = [root / tenant] if tenant is not None else [path for path in root.iterdir() if path.is_dir()]
        names: list[str] = []
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                names.extend(entry.name for entry in os.scandir(folder))
        if after is not None:
            cursor = marker_name(*after)
            names = [name for name in names if name < cursor]
        names.sort(reverse=True)
        for name in names:
            try:
                item = read(name.partition("_")[2])
            except (KeyError, OSError, ValueError):
                continue
            # A marker of another creation of this id (a step that lost a race), or a record not this tenant's.
            if marker_name(item.created_at, item.id) != name or (tenant is not None and item.tenant != tenant):
                continue
            yield item
