"""Tenants (API_KEYS_FILE): each sees and uses only its own datasets, jobs and adapters; API_KEY is the admin."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.job_store import JobStore
from shared.schemas import JobRecord
from shared.storage import job_output_dir
from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY

ALICE_KEY = "alice-" + uuid.uuid4().hex
BOB_KEY = "bob-" + uuid.uuid4().hex
CAROL_KEY = "carol-" + uuid.uuid4().hex


def write_keys(path, text: str, *, bump: int = 0) -> None:
    path.write_text(text)
    stat = path.stat()
    # An explicit step of the mtime: two writes within one file-system tick must still read as a change.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "api_keys"
    bob_digest = hashlib.sha256(BOB_KEY.encode()).hexdigest()
    write_keys(path, f"# tenants of this stack\n\nalice {ALICE_KEY}\nbob sha256:{bob_digest}\n")
    return path


@pytest.fixture
def tenant_settings(settings, keys_file):
    return settings.model_copy(update={"API_KEYS_FILE": keys_file})


@pytest.fixture
def app(tenant_settings):
    return create_app(tenant_settings)


@pytest.fixture
def admin(app):
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client


@pytest.fixture
def alice(app):
    with TestClient(app, headers={"Authorization": f"Bearer {ALICE_KEY}"}) as client:
        yield client


@pytest.fixture
def bob(app):
    with TestClient(app, headers={"X-API-Key": BOB_KEY}) as client:
        yield client


def upload(client, rows: int = 3) -> str:
    response = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(rows), "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def make_adapter(settings, name: str, tenant: str | None) -> None:
    folder = settings.SHARED_DIR / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    (folder / "metrics.json").write_text(json.dumps({"validation": {"log_loss": 1.0}}))
    (folder / "calibration.json").write_text("{}")
    (folder / "train_job.json").write_text(json.dumps({"job_id": uuid.uuid4().hex, "tenant": tenant}))


def test_whoami_names_the_tenant_of_the_key(admin, alice, bob, anonymous):
    assert alice.get("/v1/whoami").json() == {"tenant": "alice", "admin": False}
    assert bob.get("/v1/whoami").json() == {"tenant": "bob", "admin": False}  # its sha256: line
    assert admin.get("/v1/whoami").json() == {"tenant": "admin", "admin": True}
    assert anonymous.get("/v1/whoami").status_code == 401


def test_another_tenant_gets_404_on_every_route_and_listings_leave_its_work_out(
    admin, alice, bob, tenant_settings, caplog
):
    caplog.set_level(logging.INFO)
    dataset_id = upload(alice)
    job_id = alice.post("/v1/jobs/predict", json={"dataset": dataset_id}).json()["job_id"]
    # A finished artefact to download, as a worker would leave it.
    out_dir = job_output_dir(tenant_settings.SHARED_DIR, job_id)
    out_dir.mkdir(parents=True)
    (out_dir / "submission.csv").write_text("id,winner_model_a,winner_model_b,winner_tie\n")
    JobStore(tenant_settings.SHARED_DIR).succeed(job_id, artifacts=["submission.csv"], result={})

    record_text = (tenant_settings.SHARED_DIR / "jobs" / f"{job_id}.json").read_text()
    assert json.loads(record_text)["tenant"] == "alice"
    assert ALICE_KEY not in record_text and ALICE_KEY not in caplog.text
    assert "created by tenant alice" in caplog.text
    assert alice.get(f"/v1/datasets/{dataset_id}").json()["tenant"] == "alice"

    for response in (
        bob.get(f"/v1/datasets/{dataset_id}"),
        bob.get(f"/v1/jobs/{job_id}"),
        bob.post(f"/v1/jobs/{job_id}/cancel"),
        bob.get(f"/v1/jobs/{job_id}/artifacts/submission.csv"),
    ):
        assert response.status_code == 404, response.text
        assert "alice" not in response.text
    assert bob.get("/v1/datasets").json() == [] and bob.get("/v1/jobs").json() == []
    # The owner and the admin see it.
    assert alice.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").status_code == 200
    assert [job["id"] for job in alice.get("/v1/jobs").json()] == [job_id]
    assert [job["id"] for job in admin.get("/v1/jobs").json()] == [job_id]
    assert [info["id"] for info in admin.get("/v1/datasets").json()] == [dataset_id]
    assert admin.get(f"/v1/jobs/{job_id}").status_code == 200


def test_another_tenants_dataset_or_adapter_cannot_be_used_as_input(alice, bob, tenant_settings):
    dataset_id = upload(alice)
    bob_dataset = upload(bob)
    make_adapter(tenant_settings, "alice-judge", "alice")
    requests = [
        ("predict", {"dataset": dataset_id}),
        ("train", {"dataset": dataset_id, "epochs": 1}),
        ("train", {"dataset": bob_dataset, "validation_dataset": dataset_id, "epochs": 1}),
        ("train", {"dataset": bob_dataset, "extra_datasets": [{"dataset": dataset_id}], "epochs": 1}),
        ("leaderboard", {"dataset": dataset_id}),
        ("synth", {"dataset": dataset_id}),
        ("predict", {"dataset": bob_dataset, "adapter": "alice-judge"}),
        ("predict", {"dataset": bob_dataset, "calibration": "adapters/alice-judge/calibration.json"}),
    ]
    for kind, body in requests:
        response = bob.post(f"/v1/jobs/{kind}", json=body)
        assert response.status_code == 404, (kind, body, response.text)
    assert bob.get("/v1/jobs").json() == []
    assert bob.get("/v1/adapters/alice-judge").status_code == 404
    assert bob.get("/v1/adapters").json() == []
    assert [info["name"] for info in alice.get("/v1/adapters").json()] == ["alice-judge"]
    # The adapter's owner may use it.
    response = alice.post("/v1/jobs/predict", json={"dataset": dataset_id, "adapter": "alice-judge"})
    assert response.status_code != 404, response.text


def test_a_train_job_makes_its_adapter_the_tenants(alice, bob, admin, tenant_settings):
    dataset_id = upload(alice)
    response = alice.post("/v1/jobs/train", json={"dataset": dataset_id, "adapter_name": "mine", "epochs": 1})
    assert response.status_code == 202, response.text
    claim = json.loads((tenant_settings.SHARED_DIR / "adapters" / "mine" / "train_job.json").read_text())
    assert claim["tenant"] == "alice"
    assert [info["name"] for info in alice.get("/v1/adapters").json()] == ["mine"]
    assert bob.get("/v1/adapters").json() == [] and bob.get("/v1/adapters/mine").status_code == 404
    assert [info["name"] for info in admin.get("/v1/adapters").json()] == ["mine"]


def test_records_made_before_tenants_are_the_admins_only(admin, alice, tenant_settings):
    JobStore(tenant_settings.SHARED_DIR).create(JobRecord(id=uuid.uuid4().hex, kind="train"))
    make_adapter(tenant_settings, "old-judge", None)
    assert alice.get("/v1/jobs").json() == [] and alice.get("/v1/adapters").json() == []
    assert len(admin.get("/v1/jobs").json()) == 1 and len(admin.get("/v1/adapters").json()) == 1


def test_an_idempotency_key_is_per_tenant(alice, bob):
    alice_dataset, bob_dataset = upload(alice), upload(bob)
    headers = {"Idempotency-Key": "same-key"}
    first = alice.post("/v1/jobs/predict", json={"dataset": alice_dataset}, headers=headers)
    other = bob.post("/v1/jobs/predict", json={"dataset": bob_dataset}, headers=headers)
    assert first.status_code == 202 and other.status_code == 202, other.text
    assert first.json()["job_id"] != other.json()["job_id"]
    assert alice.post("/v1/jobs/predict", json={"dataset": alice_dataset}, headers=headers).status_code == 200


def test_the_keys_file_is_read_again_when_it_changes(app, keys_file, alice):
    with TestClient(app, headers={"X-API-Key": CAROL_KEY}) as carol:
        assert carol.get("/v1/whoami").status_code == 401
        write_keys(keys_file, keys_file.read_text() + f"carol {CAROL_KEY}  \n", bump=1)
        assert carol.get("/v1/whoami").json()["tenant"] == "carol"
        # Revoked: the line goes, the key stops working without a restart; a bad line is skipped, not fatal.
        write_keys(keys_file, f"alice {ALICE_KEY}\nthis line is malformed\nadmin {CAROL_KEY}\n", bump=2)
        assert carol.get("/v1/whoami").status_code == 401
        assert alice.get("/v1/whoami").json()["tenant"] == "alice"
        keys_file.unlink()
        assert alice.get("/v1/whoami").status_code == 401


def test_a_gateway_with_only_a_keys_file_has_no_admin(settings, keys_file):
    app = create_app(settings.model_copy(update={"API_KEY": None, "API_KEYS_FILE": keys_file}))
    with TestClient(app, headers={"X-API-Key": ALICE_KEY}) as alice:
        assert alice.get("/v1/whoami").json() == {"tenant": "alice", "admin": False}
    with TestClient(app, headers={"X-API-Key": ""}) as empty:
        assert empty.get("/v1/whoami").status_code == 401
