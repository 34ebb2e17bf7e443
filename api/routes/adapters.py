"""GET /v1/adapters: the trained adapters in SHARED_DIR/adapters/ and their validation figures."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api.deps import SettingsDep, TenantDep
from shared.adapter_store import AdapterNotFoundError, list_adapters, read_adapter
from shared.schemas import NAME_PATTERN, AdapterInfo

router = APIRouter(prefix="/adapters", tags=["adapters"])
AdapterName = Annotated[str, Path(pattern=NAME_PATTERN, description="An adapter folder name under adapters/.")]


@router.get("", response_model=list[AdapterInfo])
def read_adapters(settings: SettingsDep, tenant: TenantDep) -> list[AdapterInfo]:
    """The caller's trained adapters (the admin: everyone's) with their validation figures, newest first; use a
    name as a predict job's `adapter`."""
    return [info for info in list_adapters(settings.SHARED_DIR) if tenant.owns(info.tenant)]


@router.get("/{name}", response_model=AdapterInfo)
def read_adapter_info(name: AdapterName, settings: SettingsDep, tenant: TenantDep) -> AdapterInfo:
    try:
        info = read_adapter(settings.SHARED_DIR, name)
    except AdapterNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if not tenant.owns(info.tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(AdapterNotFoundError(name)))
    return info
