"""Uploaded datasets in SHARED_DIR/datasets/<id>/ (dataset.csv as uploaded, meta.json).

An upload is streamed to a staging folder with a size cap, validated against the Kaggle arena schema,
and only then renamed into place: a rejected upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import BinaryIO

from shared.schemas import ID_PATTERN, DatasetInfo, utc_now
from shared.storage import atomic_write_text, dataset_csv_path, dataset_dir, new_id

CHUNK_BYTES = 1 << 20


class UploadTooLargeError(ValueError):
    pass


class DatasetNotFoundError(KeyError):
    def __init__(self, dataset_id: str) -> None:
        super().__init__(dataset_id)
        self.dataset_id = dataset_id

    def __str__(self) -> str:
        return f"no dataset {self.dataset_id!r}; upload one with POST /v1/datasets or list them with GET /v1/datasets"


class DatasetStore:
    def __init__(self, shared_dir: Path, *, max_bytes: int, max_cell_bytes: int | None = None) -> None:
        self.shared_dir = Path(shared_dir)
        self.root = self.shared_dir / "datasets"
        self.max_bytes = max_bytes
        self.max_cell_bytes = max_cell_bytes

    def save_upload(self, source: BinaryIO, *, filename: str | None) -> DatasetInfo:
        """Copy, validate and store an uploaded CSV.

        Raises:
            UploadTooLargeError: more than `max_bytes`.
            DataFormatError: not a Kaggle arena CSV (the message names the row and column to fix).
        """
        # The gateway validates with the workers' reader (pandas + numpy, no torch): one schema, one place.
        from workers.pipelines.data_io import DataFormatError, read_arena_csv

        display_name = Path(filename or "dataset.csv").name[:200]
        dataset_id = new_id()
        staging = self.root / f".upload-{dataset_id}"
        staging.mkdir(parents=True)
        try:
            digest = hashlib.sha256()
            size = 0
            csv_path = staging / "dataset.csv"
            with open(csv_path, "wb") as handle:
                while chunk := source.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLargeError(
                            f"the upload exceeds the {self.max_bytes:,}-byte cap (MAX_UPLOAD_BYTES); split the file"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
            try:
                dataset = read_arena_csv(csv_path, max_cell_bytes=self.max_cell_bytes)
            except DataFormatError as exc:
                # The client knows its file by the name it sent, not by our staging path.
                raise DataFormatError(str(exc).replace(str(csv_path), display_name)) from None
            info = DatasetInfo(
                id=dataset_id,
                name=display_name,
                rows=len(dataset),
                labelled=dataset.labels is not None,
                bytes=size,
                sha256=digest.hexdigest(),
                created_at=utc_now(),
            )
            atomic_write_text(staging / "meta.json", info.model_dump_json(indent=1))
            staging.rename(dataset_dir(self.shared_dir, dataset_id))
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def read(self, dataset_id: str) -> DatasetInfo:
        if not re.match(ID_PATTERN, dataset_id):
            raise DatasetNotFoundError(dataset_id)
        try:
            return DatasetInfo.model_validate_json((dataset_dir(self.shared_dir, dataset_id) / "meta.json").read_text())
        except FileNotFoundError:
            raise DatasetNotFoundError(dataset_id) from None

    def csv_path(self, dataset_id: str) -> Path:
        return dataset_csv_path(self.shared_dir, dataset_id)

    def list(self) -> list[DatasetInfo]:
        """Newest first."""
        infos = []
        for meta_path in self.root.glob("*/meta.json"):
            try:
                infos.append(DatasetInfo.model_validate_json(meta_path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(infos, key=lambda info: info.created_at, reverse=True)
