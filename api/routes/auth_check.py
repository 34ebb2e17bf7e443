"""GET /v1/auth-check: 204 for a valid key, 401 otherwise. The proxy's `auth_request` target: nginx asks it before
it reads a request's body, so a caller without a valid key is refused before its upload is read or spooled.

The answer comes from the same key check as every /v1 route (ApiKeyGate and require_api_key, api/deps.py
`authenticate`: API_KEY and the tenants' keys); the route itself reads nothing and touches nothing."""

from fastapi import APIRouter, Response, status

router = APIRouter(prefix="/auth-check", tags=["health"])


@router.get(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Whether the request's API key is valid (204; 401 without one): the proxy checks keys with it",
)
def check_api_key() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)
