"""GET /v1/whoami: the tenant the request's key belongs to (the page shows who it is signed in as)."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import TenantDep

router = APIRouter(prefix="/whoami", tags=["tenants"])


class WhoAmI(BaseModel):
    tenant: str = Field(description="The key's tenant (API_KEYS_FILE), or `admin` for API_KEY.")
    admin: bool = Field(description="True for API_KEY: it sees every tenant's datasets, jobs and adapters.")


@router.get("", response_model=WhoAmI)
async def read_whoami(tenant: TenantDep) -> WhoAmI:
    return WhoAmI(tenant=tenant.name, admin=tenant.admin)
