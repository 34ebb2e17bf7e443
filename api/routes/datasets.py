"""POST/GET /v1/datasets: upload a Kaggle arena CSV (validated before it is stored), list and read datasets."""

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, UploadFile, status

from api.deps import DatasetStoreDep, FreeSpaceDep, JobStoreDep, TenantDep
from api.openapi import ITEM_CHANGE_RESPONSES, ITEM_RESPONSES, PAGE_HEADERS, UPLOAD_RESPONSES
from api.paging import PageAfter, PageLimit, page_headers
from api.routes.jobs import read_own_dataset
from shared.dataset_store import UploadTooLargeError
from shared.schemas import ID_PATTERN, DatasetInfo

log = logging.getLogger(__name__)
router = APIRouter(prefix="/datasets", tags=["datasets"])
DatasetId = Annotated[str, Path(pattern=ID_PATTERN, description="A dataset id (32 hex digits).")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetInfo, responses=UPLOAD_RESPONSES)
def create_dataset(
    file: UploadFile, datasets: DatasetStoreDep, tenant: TenantDep, _free_space: Annotated[None, FreeSpaceDep]
) -> DatasetInfo:
    """Upload a Kaggle arena CSV (multipart field `file`); it is validated before anything is stored.

    A sync route (a thread of the pool): validation streams the staged file with row, column and cell caps
    (MAX_UPLOAD_ROWS, MAX_UPLOAD_COLUMNS, MAX_CELL_BYTES), so it holds the thread for seconds at most. At most
    MAX_CONCURRENT_UPLOADS uploads are received and checked at once: one more gets 503 with Retry-After before its
    body is read (api/main.py UploadSlots).
    """
    from shared.arena_csv import CsvLimitError, DataFormatError

    try:
        return datasets.save_upload(file.file, filename=file.filename, tenant=tenant.name)
    except (UploadTooLargeError, CsvLimitError) as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
    except DataFormatError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"not a Kaggle arena CSV: {exc}") from None


@router.get("", response_model=list[DatasetInfo], responses=PAGE_HEADERS)
def read_datasets(
    datasets: DatasetStoreDep,
    tenant: TenantDep,
    request: Request,
    response: Response,
    limit: PageLimit = 50,
    after: PageAfter = None,
) -> list[DatasetInfo]:
    """The caller's datasets (the admin: everyone's), newest first; one page of `limit`. When more remain, the
    `X-Next-Cursor` header holds the `after` of the next page and `Link` its URL."""
    page = datasets.list(tenant=None if tenant.admin else tenant.name, after=after, limit=limit + 1)
    response.headers.update(page_headers(request, page, limit=limit, key=lambda info: (info.created_at, info.id)))
    return page[:limit]


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ITEM_CHANGE_RESPONSES)
def delete_dataset(dataset_id: DatasetId, datasets: DatasetStoreDep, jobs: JobStoreDep, tenant: TenantDep) -> Response:
    """Delete a dataset; 409 while an unfinished job reads it (cancel or delete that job first)."""
    read_own_dataset(datasets, dataset_id, tenant)
    in_use, _ = jobs.inputs_in_use()
    if dataset_id in in_use:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"dataset {dataset_id} is read by an unfinished job; wait for it, or cancel it"
            " (DELETE /v1/jobs/{id}), then delete the dataset",
        )
    datasets.delete(dataset_id)
    log.info("dataset %s deleted by tenant %s", dataset_id, tenant.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{dataset_id}", response_model=DatasetInfo, responses=ITEM_RESPONSES)
def read_dataset(dataset_id: DatasetId, datasets: DatasetStoreDep, tenant: TenantDep) -> DatasetInfo:
    return read_own_dataset(datasets, dataset_id, tenant)
