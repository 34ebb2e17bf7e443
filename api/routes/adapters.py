"""GET /v1/adapters: the trained adapters in SHARED_DIR/adapters/ and their validation figures."""

import logging
import shutil
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from api.deps import JobStoreDep, SettingsDep, TenantDep
from api.openapi import ITEM_CHANGE_RESPONSES, ITEM_RESPONSES
from shared.adapter_store import AdapterNotFoundError, list_adapters, read_adapter
from shared.artifacts import ADAPTERS_DIR_NAME
from shared.schemas import NAME_PATTERN, AdapterInfo

log = logging.getLogger(__name__)
router = APIRouter(prefix="/adapters", tags=["adapters"])
AdapterName = Annotated[str, Path(pattern=NAME_PATTERN, description="An adapter folder name under adapters/.")]


@router.get("", response_model=list[AdapterInfo])
def read_adapters(settings: SettingsDep, tenant: TenantDep) -> list[AdapterInfo]:
    """The caller's trained adapters (the admin: everyone's) with their validation figures, newest first; use a
    name as a predict job's `adapter`."""
    return [info for info in list_adapters(settings.SHARED_DIR) if tenant.owns(info.tenant)]


@router.get("/{name}", response_model=AdapterInfo, responses=ITEM_RESPONSES)
def read_adapter_info(name: AdapterName, settings: SettingsDep, tenant: TenantDep) -> AdapterInfo:
    try:
        info = read_adapter(settings.SHARED_DIR, name)
    except AdapterNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if not tenant.owns(info.tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(AdapterNotFoundError(name)))
    return info


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=ITEM_CHANGE_RESPONSES)
def delete_adapter(name: AdapterName, settings: SettingsDep, jobs: JobStoreDep, tenant: TenantDep) -> Response:
    """Delete an adapter folder; 409 while an unfinished job trains it or predicts with it."""
    read_adapter_info(name, settings, tenant)  # 404 when missing or another tenant's
    _, in_use = jobs.inputs_in_use()
    if name in in_use:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"adapter {name!r} is used by an unfinished job; wait for it, or cancel it (DELETE /v1/jobs/{{id}})",
        )
    adapters_dir = settings.SHARED_DIR / ADAPTERS_DIR_NAME
    aside = adapters_dir / f".deleted-{name}"
    (adapters_dir / name).rename(aside)  # one rename: never listed half-deleted, the name is free at once
    shutil.rmtree(aside, ignore_errors=True)
    log.info("adapter %s deleted by tenant %s", name, tenant.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
