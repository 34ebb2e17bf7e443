"""Upload caps (MAX_UPLOAD_ROWS, MAX_UPLOAD_COLUMNS), duplicate column names, and short errors that name the fix.

The bounded time and memory of a maximal upload are measured by scripts/bench/bench_upload.py, not asserted here.
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY, snapshot

HEADER = b"id,prompt,response_a,response_b"


def upload(client: TestClient, content: bytes):
    return client.post("/v1/datasets", files={"file": ("pairs.csv", content, "text/csv")})


def capped_client(settings, **caps) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=caps)), headers={"X-API-Key": API_KEY})


@pytest.mark.parametrize(
    ("header", "duplicate"),
    [
        (b"id,prompt,response_a,response_b, id", "'id'"),
        (b"id,prompt ,response_a,response_b,prompt", "'prompt'"),
        (b"id,prompt,response_a,response_b,source,source", "'source'"),
    ],
)
def test_columns_equal_once_spaces_are_removed_are_422(client, settings, header, duplicate):
    """' id' and 'id' used to reach pandas as two columns named 'id': a 500."""
    before = snapshot(settings.SHARED_DIR)
    width = header.count(b",") + 1
    row = b'1,"[""p""]","[""a""]","[""b""]"' + b",x" * (width - 4)
    response = upload(client, header + b"\n" + row + b"\n")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"duplicate column {duplicate}" in detail and len(detail) < 300, detail
    assert snapshot(settings.SHARED_DIR) == before


@pytest.mark.parametrize(("extra_columns", "counted"), [(100, "has 104 columns"), (9_000, "has more than 2,")])
def test_too_many_columns_are_refused_before_any_row_is_read(settings, extra_columns, counted):
    """Over MAX_UPLOAD_COLUMNS: 413 naming the setting, from the header alone (the broken row is never parsed).
    A header longer than the cap's names could be (the 9,000) is refused before csv splits all of it."""
    extra = b"".join(b",c%d" % index for index in range(extra_columns))
    content = HEADER + extra + b"\n1,not json,[],[]" + b"," * extra_columns + b"\n"
    assert len(content) < settings.MAX_UPLOAD_BYTES
    with capped_client(settings, MAX_UPLOAD_COLUMNS=16) as client:
        response = upload(client, content)
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert counted in detail and "MAX_UPLOAD_COLUMNS" in detail and len(detail) < 300, detail


def test_a_header_too_long_to_split_is_refused_as_too_many_columns(settings):
    """A header longer than MAX_UPLOAD_COLUMNS names could be is refused before csv splits it into fields."""
    content = HEADER + b"," * 60_000 + b"\n"
    with capped_client(settings, MAX_UPLOAD_COLUMNS=16) as client:
        response = upload(client, content)
    assert response.status_code == 413, response.text
    assert "MAX_UPLOAD_COLUMNS" in response.json()["detail"]


def test_the_column_cap_allows_a_kaggle_file(settings):
    with capped_client(settings, MAX_UPLOAD_COLUMNS=9) as client:
        response = upload(client, arena_csv(3))  # 9 columns: id, model_a/b, 3 turns, 3 labels
    assert response.status_code == 201, response.text


def test_more_rows_than_the_cap_are_413(settings):
    before = snapshot(settings.SHARED_DIR)
    with capped_client(settings, MAX_UPLOAD_ROWS=5) as client:
        at_cap = upload(client, arena_csv(5))
        # The cap is met while streaming, before the row after it is parsed: its broken JSON is never reported.
        over = upload(client, arena_csv(5) + b"6,x,x,not json,[],[],1,0,0\n")
        listed = client.get("/v1/datasets").json()
    assert at_cap.status_code == 201 and at_cap.json()["rows"] == 5, at_cap.text
    assert over.status_code == 413, over.text
    detail = over.json()["detail"]
    assert "more than 5 rows" in detail and "MAX_UPLOAD_ROWS" in detail, detail
    assert [entry["id"] for entry in listed] == [at_cap.json()["id"]]
    assert len(snapshot(settings.SHARED_DIR)) == len(before) + 2  # the one dataset's csv and meta.json


def test_blank_lines_are_not_rows(settings):
    with capped_client(settings, MAX_UPLOAD_ROWS=3) as client:
        response = upload(client, arena_csv(3).replace(b"\r\n", b"\r\n\r\n"))
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 3


LONG = "x" * 15_000  # 3 of them fit under the tests' MAX_UPLOAD_BYTES (64 KiB)
PATHOLOGICAL = {
    "long-id-bad-json": HEADER + f"\n{LONG},not json,[],[]\n".encode(),
    "long-label": arena_csv(1).replace(b",1,0,0", f",{LONG},0,0".encode()),
    "long-column-names": (",".join(["id", "prompt", "response_a", LONG, LONG]) + "\n1,[],[],[],[]\n").encode(),
    "long-missing-columns": (",".join(f"{LONG}{index}" for index in range(3)) + "\n1,1,1\n").encode(),
    "long-duplicate-ids": HEADER + f"\n{LONG},[],[],[]\n{LONG},[],[],[]\n".encode(),
    "row-wider-than-header": HEADER + b"\n1,[],[],[],extra\n",
    "row-narrower-than-header": HEADER + b"\n1,[],[]\n",
    "quote-not-closed-before-comma": HEADER + b'\n1,"[""p""]"x,[],[]\n',
    "unterminated-quote": HEADER + b'\n1,[],[],"[\n',
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_refusals_are_short_and_name_no_path(client, settings, name):
    response = upload(client, PATHOLOGICAL[name])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) < 300, detail
    assert str(settings.SHARED_DIR) not in detail and ".upload-" not in detail and "/tmp" not in detail, detail


def test_uploads_beyond_the_concurrency_cap_get_503_at_once(settings):
    """MAX_CONCURRENT_UPLOADS: one more upload is refused with Retry-After instead of taking another thread."""
    with capped_client(settings, MAX_CONCURRENT_UPLOADS=1) as client:
        slots = client.app.state.dataset_store.upload_slots
        assert slots.acquire(blocking=False)  # an upload in progress
        try:
            busy = upload(client, arena_csv(3))
        finally:
            slots.release()
        refused = upload(client, HEADER + b"\n")  # a refused upload gives its slot back too
        stored = upload(client, arena_csv(3))
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "5" and "MAX_CONCURRENT_UPLOADS" in busy.json()["detail"]
    assert refused.status_code == 422 and stored.status_code == 201, stored.text


def test_a_model_or_source_name_over_the_cap_is_422_naming_row_and_column(settings):
    """MAX_NAME_CHARS: names are labels in figures and leaderboards; a 900 KB one used to reach them."""
    client = capped_client(settings, MAX_NAME_CHARS=50)
    before = snapshot(settings.SHARED_DIR)
    response = upload(client, arena_csv(3, models=("a", "b", "m" * 51)))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "row 2 (id='1001'), column 'model_b': 51 characters" in detail and "MAX_NAME_CHARS" in detail
    assert snapshot(settings.SHARED_DIR) == before
    assert upload(client, arena_csv(3, models=("a", "b", "m" * 50))).status_code == 201


def test_bytes_that_are_not_utf8_are_422_naming_the_row(client, settings):
    """They were replaced silently (U+FFFD) and the upload got 201."""
    before = snapshot(settings.SHARED_DIR)
    content = arena_csv(3).replace(b"Seven.", b"Sev\xe9n.")
    response = upload(client, content)
    assert response.status_code == 422, response.text
    assert "row 2, column 6: bytes that are not UTF-8" in response.json()["detail"]
    assert snapshot(settings.SHARED_DIR) == before


def test_an_upload_past_the_slots_is_refused_before_a_byte_of_its_body_is_read(settings):
    """The slot was taken in the route, after FastAPI had received and staged the whole multipart body."""
    app = create_app(settings.model_copy(update={"MAX_CONCURRENT_UPLOADS": 1}))
    scope = {
        "type": "http", "method": "POST", "path": "/v1/datasets", "raw_path": b"/v1/datasets", "query_string": b"",
        "root_path": "", "scheme": "http", "http_version": "1.1", "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"x-api-key", API_KEY.encode()), (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", b"3072"),
        ],
    }  # fmt: skip

    def send_upload() -> tuple[int, int]:
        """The answer's status and how many body pieces the gateway read."""
        reads, answers = [], []

        async def receive() -> dict:
            reads.append(1)
            return {"type": "http.request", "body": b"x" * 1024, "more_body": len(reads) < 3}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answers.append(message["status"])

        asyncio.run(app(scope, receive, send))
        return answers[0], len(reads)

    slots = app.state.dataset_store.upload_slots
    assert slots.acquire(blocking=False)  # an upload in progress
    try:
        busy = send_upload()
    finally:
        slots.release()
    assert busy == (503, 0)
    status, reads = send_upload()  # a free slot: the gateway reads the (malformed) body and refuses it
    assert status in (400, 422) and reads >= 1
