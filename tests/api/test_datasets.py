import json

import pytest

from tests.api.arena_rows import arena_csv
from tests.api.conftest import snapshot


def upload(client, content: bytes, name: str = "pairs.csv"):
    return client.post("/v1/datasets", files={"file": (name, content, "text/csv")})


def test_upload_list_and_read(client):
    created = upload(client, arena_csv(3))
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["rows"] == 3 and info["labelled"] is True and info["name"] == "pairs.csv"
    test_file = upload(client, arena_csv(2, labelled=False)).json()
    assert test_file["labelled"] is False
    listed = client.get("/v1/datasets").json()
    assert [entry["id"] for entry in listed] == [test_file["id"], info["id"]]
    assert client.get(f"/v1/datasets/{info['id']}").json() == info


def _turns_not_json() -> bytes:
    return b'id,prompt,response_a,response_b\n1,"Hello?","[""A""]","[""B""]"\n'


def _turns_not_strings() -> bytes:
    return b'id,prompt,response_a,response_b\n1,"[1, 2]","[""A""]","[""B""]"\n'


BAD_UPLOADS = {
    "empty": (b"", "empty"),
    "header-only": (b"id,prompt,response_a,response_b\n", "no rows"),
    "wrong-columns": (b"id,question,answer\n1,a,b\n", "missing column"),
    "non-json-turns": (_turns_not_json(), "not valid JSON"),
    "turns-not-strings": (_turns_not_strings(), "strings"),
    "malformed-csv": (b'id,prompt,response_a,response_b\n1,"["x"],"unterminated\n', "CSV"),
    "bad-labels": (arena_csv(2).replace(b",1,0,0", b",1,1,0"), "sum to 1"),
    "duplicate-ids": (arena_csv(2, start_id=5).replace(b"\n6,", b"\n5,"), "duplicate"),
    "binary": (bytes(range(256)) * 4, ""),
    "spaced-duplicate-columns": (b"id,prompt,response_a,response_b, id\n1,[],[],[],2\n", "duplicate column 'id'"),
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
def test_bad_uploads_are_422_and_store_nothing(client, settings, name):
    before = snapshot(settings.SHARED_DIR)
    content, expected = BAD_UPLOADS[name]
    response = upload(client, content)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert snapshot(settings.SHARED_DIR) == before
    assert client.get("/v1/datasets").json() == []


def test_oversized_upload_is_413(client, settings):
    before = snapshot(settings.SHARED_DIR)
    big = arena_csv(2) + b"9," + b"x" * (settings.MAX_UPLOAD_BYTES + 100_000) + b"\n"
    response = upload(client, big)
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert snapshot(settings.SHARED_DIR) == before


def test_the_size_cap_also_holds_without_a_content_length(settings):
    """A chunked upload announces no size: the copy loop enforces the cap itself."""
    import io

    from shared.dataset_store import DatasetStore, UploadTooLargeError

    store = DatasetStore(settings.SHARED_DIR, max_bytes=1000)
    (settings.SHARED_DIR / "datasets").mkdir(parents=True, exist_ok=True)
    with pytest.raises(UploadTooLargeError):
        store.save_upload(io.BytesIO(b"x" * 5000), filename="big.csv")
    assert list((settings.SHARED_DIR / "datasets").iterdir()) == []


def test_upload_without_a_file_field_is_422(client):
    response = client.post("/v1/datasets", data={"something": "else"})
    assert response.status_code == 422
    assert "file" in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("dataset_id", ["0" * 32, "..%2F..%2Fjobs"])
def test_unknown_dataset_is_404(client, dataset_id):
    response = client.get(f"/v1/datasets/{dataset_id}")
    assert response.status_code == 404


@pytest.mark.parametrize("dataset_id", ["nope", "%2E%2E"])
def test_a_malformed_dataset_id_is_422_naming_its_pattern(client, dataset_id):
    response = client.get(f"/v1/datasets/{dataset_id}")
    assert response.status_code == 422 and "[0-9a-f]{32}" in response.json()["detail"][0]["msg"]
