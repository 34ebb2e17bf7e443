"""Datasets in SHARED_DIR/datasets/<id>/ (dataset.csv, meta.json): uploads, and CSVs a synth job registers.

An upload is streamed to a staging folder with a size cap, validated against the Kaggle arena schema as a
stream (header first, then row by row, with row and column caps: memory bounded by one row, whatever the file),
and only then renamed into place: a rejected upload leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from shared.artifacts import DATASET_CSV_NAME, DATASET_META_NAME, DATASETS_DIR_NAME
from shared.creation_index import CreationIndex
from shared.schemas import ID_PATTERN, DatasetInfo, utc_now
from shared.storage import atomic_write_text, dataset_csv_path, dataset_dir, link_or_copy, new_id

CHUNK_BYTES = 1 << 20
# The index of creation order (shared/creation_index.py): GET /v1/datasets reads only the datasets of its page. Kept
# outside datasets/, where a dot-folder is an upload's staging or a deletion in progress.
INDEX_DIR_NAME = ".index"
BY_CREATED_DIR_NAME = "datasets-by-created"


class UploadTooLargeError(ValueError):
    pass


class UploadsBusyError(RuntimeError):
    """As many uploads as allowed are being stored and validated; the client should retry shortly."""


class DatasetNotFoundError(KeyError):
    def __init__(self, dataset_id: str) -> None:
        super().__init__(dataset_id)
        self.dataset_id = dataset_id

    def __str__(self) -> str:
        return f"no dataset {self.dataset_id!r}; upload one with POST /v1/datasets or list them with GET /v1/datasets"


class DatasetStore:
    def __init__(
        self,
        shared_dir: Path,
        *,
        max_bytes: int,
        max_cell_bytes: int | None = None,
        max_rows: int | None = None,
        max_columns: int | None = None,
        max_name_chars: int | None = None,
        max_concurrent_uploads: int | None = None,
    ) -> None:
        """Caps of an upload: `max_bytes` (MAX_UPLOAD_BYTES), and when given `max_cell_bytes` (MAX_CELL_BYTES),
        `max_rows` (MAX_UPLOAD_ROWS), `max_columns` (MAX_UPLOAD_COLUMNS), `max_name_chars` (MAX_NAME_CHARS). A
        registered CSV is checked without them.
        `max_concurrent_uploads` (MAX_CONCURRENT_UPLOADS): uploads stored at once, None: any number."""
        self.shared_dir = Path(shared_dir)
        self.root = self.shared_dir / DATASETS_DIR_NAME
        self.max_bytes = max_bytes
        self.max_cell_bytes = max_cell_bytes
        self.max_rows = max_rows
        self.max_columns = max_columns
        self.max_name_chars = max_name_chars
        self.max_concurrent_uploads = max_concurrent_uploads
        self.upload_slots = threading.BoundedSemaphore(max_concurrent_uploads) if max_concurrent_uploads else None
        index_dir = self.shared_dir / INDEX_DIR_NAME
        self.created = CreationIndex(
            index_dir / BY_CREATED_DIR_NAME, lock=index_dir / ".locks" / f"{BY_CREATED_DIR_NAME}.lock", scan=self._scan
        )

    @contextlib.contextmanager
    def upload_slot(self) -> Iterator[None]:
        """Hold one of `max_concurrent_uploads` slots while an upload is received, validated and stored.

        Raises:
            UploadsBusyError: every slot is taken (nothing was read).
        """
        if self.upload_slots is None:
            yield
            return
        if not self.upload_slots.acquire(blocking=False):
            raise UploadsBusyError(
                f"{self.max_concurrent_uploads} upload(s) are being validated already (MAX_CONCURRENT_UPLOADS);"
                " retry in a few seconds"
            )
        try:
            yield
        finally:
            self.upload_slots.release()

    def save_upload(self, source: BinaryIO, *, filename: str | None, tenant: str | None = None) -> DatasetInfo:
        """Copy, validate and store an uploaded CSV as `tenant`'s. The gateway holds an upload_slot around the
        whole request (api/main.py UploadSlots), from before its body is read.

        Raises:
            UploadTooLargeError: more than `max_bytes`.
            CsvLimitError: more rows or columns than `max_rows` or `max_columns` (a DataFormatError).
            DataFormatError: not a Kaggle arena CSV (the message names the row and column to fix).
        """
        display_name = Path(filename or DATASET_CSV_NAME).name[:200]
        dataset_id = new_id()
        staging = self.root / f".upload-{dataset_id}"
        staging.mkdir(parents=True)
        try:
            digest = hashlib.sha256()
            size = 0
            with open(staging / DATASET_CSV_NAME, "wb") as handle:
                while chunk := source.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLargeError(
                            f"the upload exceeds the {self.max_bytes:,}-byte cap (MAX_UPLOAD_BYTES); split the file"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
            # The checker's messages name rows and columns, never the staging path.
            return self._publish(
                staging, dataset_id, name=display_name, size=size, sha256=digest.hexdigest(), capped=True,
                tenant=tenant,
            )  # fmt: skip
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def register(
        self, csv_path: Path, *, name: str, dataset_id: str | None = None, tenant: str | None = None
    ) -> DatasetInfo:
        """Store a CSV already on the shared volume (a synth job's pairs.csv) as a dataset, linked, not copied.

        Args:
            csv_path: the CSV to store.
            name: the dataset's display name.
            dataset_id: the id to store it under, for a caller that may register the same file again (a synth
                job redelivered after it registered): a dataset of that id that exists already is returned as it
                is, so a repeated step never makes a second dataset. None: a fresh id.
            tenant: whose it is (the synth job's tenant).

        Raises:
            DataFormatError: not a Kaggle arena CSV.
        """
        if dataset_id is not None:
            with contextlib.suppress(DatasetNotFoundError):
                return self.read(dataset_id)
        dataset_id = dataset_id or new_id()
        # Its own staging name: a step killed mid-registration leaves its staging folder behind.
        staging = self.root / f".register-{new_id()}"
        staging.mkdir(parents=True)
        try:
            link_or_copy(Path(csv_path), staging / DATASET_CSV_NAME)
            data = (staging / DATASET_CSV_NAME).read_bytes()
            try:
                return self._publish(
                    staging, dataset_id, name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                    tenant=tenant,
                )  # fmt: skip
            except OSError:
                # A concurrent delivery of the same step renamed its folder into place first: use that one.
                with contextlib.suppress(DatasetNotFoundError):
                    return self.read(dataset_id)
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(
        self,
        staging: Path,
        dataset_id: str,
        *,
        name: str,
        size: int,
        sha256: str,
        capped: bool = False,
        tenant: str | None = None,
    ) -> DatasetInfo:
        """Validate staging/dataset.csv (with the upload caps when `capped`), write meta.json beside it and rename
        the folder into place."""
        # Imported here: only needed once a file arrives.
        from shared.arena_csv import check_arena_csv

        summary = check_arena_csv(
            staging / DATASET_CSV_NAME,
            max_rows=self.max_rows if capped else None,
            max_columns=self.max_columns if capped else None,
            max_cell_bytes=self.max_cell_bytes if capped else None,
            max_name_chars=self.max_name_chars if capped else None,
        )
        info = DatasetInfo(
            id=dataset_id,
            name=name,
            rows=summary.rows,
            labelled=summary.labelled,
            model_names=summary.model_names,
            bytes=size,
            sha256=sha256,
            created_at=utc_now(),
            tenant=tenant,
        )
        atomic_write_text(staging / DATASET_META_NAME, info.model_dump_json(indent=1))
        self.created.add(info)  # indexed first: a dataset in place is never unlisted
        try:
            staging.rename(dataset_dir(self.shared_dir, dataset_id))
        except OSError:  # the id is taken (a concurrent registration of it): that one keeps its own marker
            self.created.remove(info)
            raise
        return info

    def read(self, dataset_id: str) -> DatasetInfo:
        if not re.match(ID_PATTERN, dataset_id):
            raise DatasetNotFoundError(dataset_id)
        try:
            return DatasetInfo.model_validate_json(
                (dataset_dir(self.shared_dir, dataset_id) / DATASET_META_NAME).read_text()
            )
        except FileNotFoundError:
            raise DatasetNotFoundError(dataset_id) from None

    def csv_path(self, dataset_id: str) -> Path:
        return dataset_csv_path(self.shared_dir, dataset_id)

    def delete(self, dataset_id: str) -> None:
        """Remove datasets/<id>/: renamed aside first, so it is never listed half-deleted; then its marker in the
        index of creation order."""
        folder = dataset_dir(self.shared_dir, dataset_id)
        aside = self.root / f".deleted-{dataset_id}"
        try:
            folder.rename(aside)
        except FileNotFoundError:
            return
        try:
            self.created.remove(DatasetInfo.model_validate_json((aside / DATASET_META_NAME).read_text()))
        except (OSError, ValueError):
            self.created.remove_id(dataset_id)
        shutil.rmtree(aside, ignore_errors=True)

    def list(
        self, *, tenant: str | None = None, after: tuple[datetime, str] | None = None, limit: int | None = None
    ) -> list[DatasetInfo]:
        """Newest first; with `tenant`, only that tenant's datasets (None: everyone's); with `after` (created_at, id)
        of a dataset, only older ones; at most `limit`. Reads the datasets of the page, not every meta.json: they
        come newest first from the index of creation order."""
        infos: list[DatasetInfo] = []
        if limit is not None and limit <= 0:
            return infos
        for info in self.created.newest_first(self.read, tenant=tenant, after=after):
            infos.append(info)
            if limit is not None and len(infos) >= limit:
                break
        return infos

    def _scan(self) -> Iterator[DatasetInfo]:
        for meta_path in self.root.glob(f"*/{DATASET_META_NAME}"):
            if meta_path.parent.name.startswith("."):  # staged or being deleted: not a dataset
                continue
            try:
                yield DatasetInfo.model_validate_json(meta_path.read_text())
            except (OSError, ValueError):
                continue
