"""Cursor paging of the listings (GET /v1/jobs, GET /v1/datasets).

The body stays a JSON list, as the page, scripts and clients read it; the next page is announced in headers:
`X-Next-Cursor` (pass it back as `after`) and `Link: <...>; rel="next"` (RFC 8288). A cursor is the position of the
last item (created_at in microseconds and its id), not an offset: items made or deleted meanwhile shift nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import AfterValidator

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"^([0-9a-f]{1,16})-([0-9a-f]{32})$")
MAX_PAGE = 500


def encode_cursor(created_at: datetime, item_id: str) -> str:
    micros = (created_at - EPOCH) // timedelta(microseconds=1)  # exact: no float round trip
    return f"{micros:x}-{item_id}"


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    match = _CURSOR.match(cursor)
    hint = "not a cursor; pass the X-Next-Cursor header of the previous page unchanged"
    if match is None:
        raise ValueError(hint)
    try:
        return EPOCH + timedelta(microseconds=int(match.group(1), 16)), match.group(2)
    except OverflowError:  # 16 hex digits hold more microseconds than a datetime reaches (year 9999)
        raise ValueError(hint) from None


PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Items per page (at most {MAX_PAGE}).")]
# One query value, validated into a position (created_at, id) before the route runs.
PageAfter = Annotated[
    str | None,
    Query(description="The X-Next-Cursor header of the previous page.", pattern=_CURSOR.pattern, max_length=49),
    AfterValidator(decode_cursor),
]


def page_headers(
    request: Request, items: Sequence[Any], *, limit: int, key: Callable[[Any], tuple[datetime, str]]
) -> dict[str, str]:
    """The next-page headers for `items` (fetched as limit + 1: one more than the page means a next page)."""
    if len(items) <= limit:
        return {}
    cursor = encode_cursor(*key(items[limit - 1]))
    url = request.url.include_query_params(after=cursor, limit=limit)
    return {"X-Next-Cursor": cursor, "Link": f'<{url.path}?{url.query}>; rel="next"'}
