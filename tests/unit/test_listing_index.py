"""The index of creation order (shared/creation_index.py): job and dataset listings equal a full scan of the records,
across tenants, cursors and filters, yet a page reads only its own records (counted, not timed)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from shared.dataset_store import DatasetStore
from shared.job_store import JobStore
from shared.schemas import DatasetInfo, JobRecord
from shared.settings import Settings
from tests.api.arena_rows import arena_csv
from workers.sweeper.retention import delete_expired

START = datetime(2026, 1, 1, tzinfo=UTC)
TENANTS = ("alice", "bob", None)
KINDS = ("predict", "train", "synth")
STATES = ("queued", "running", "succeeded", "failed")


def job_id(number: int) -> str:
    return f"{number:032x}"


def job(number: int) -> JobRecord:
    # Every third pair shares a created_at: ties are ordered by id, as the cursor is.
    return JobRecord(
        id=job_id(number),
        kind=KINDS[number % 3],
        state=STATES[number % 4],
        tenant=TENANTS[number % 3],
        created_at=START + timedelta(seconds=number // 2 * 2, microseconds=number % 5),
    )


def full_scan(store: JobStore, *, tenant=None, kind=None, state=None, after=None) -> list[str]:
    """Today's semantics spelled out: every record read, filtered and sorted."""
    records = [JobRecord.model_validate_json(path.read_text()) for path in store.jobs_dir.glob("*.json")]
    kept = [
        record
        for record in records
        if (tenant is None or record.tenant == tenant)
        and (kind is None or record.kind == kind)
        and (state is None or record.state == state)
        and (after is None or (record.created_at, record.id) < after)
    ]
    return [record.id for record in sorted(kept, key=lambda record: (record.created_at, record.id), reverse=True)]


@pytest.fixture
def parses(monkeypatch) -> dict[str, int]:
    """How many job records and dataset metas were parsed."""
    counts = {"jobs": 0, "datasets": 0}
    for name, model in (("jobs", JobRecord), ("datasets", DatasetInfo)):
        original = model.model_validate_json

        def counting(*args, name=name, original=original, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "model_validate_json", counting)
    return counts


def test_job_pages_equal_a_full_scan_across_tenants_cursors_and_filters(tmp_path):
    store = JobStore(tmp_path)
    for number in range(40):
        store.create(job(number))
    cursors = [None, (job(17).created_at, job(17).id), (job(30).created_at, job(30).id), (START, job_id(0))]
    for tenant, kind, state, after in itertools.product(TENANTS, (None, "train"), (None, "running"), cursors):
        expected = full_scan(store, tenant=tenant, kind=kind, state=state, after=after)
        for limit in (1, 3, 100):
            listed = store.list(tenant=tenant, kind=kind, state=state, after=after, limit=limit)
            assert [record.id for record in listed] == expected[:limit], (tenant, kind, state, after, limit)


def test_walking_the_cursor_visits_every_job_once_in_order(tmp_path):
    store = JobStore(tmp_path)
    for number in range(25):
        store.create(job(number))
    seen: list[str] = []
    after = None
    while page := store.list(tenant="alice", limit=4, after=after):
        seen.extend(record.id for record in page)
        after = (page[-1].created_at, page[-1].id)
    assert seen == full_scan(store, tenant="alice") and len(seen) == len(set(seen)) == 9


def test_a_job_page_reads_only_its_own_records(tmp_path, parses):
    store = JobStore(tmp_path)
    for number in range(200):
        store.create(job(number))
    parses["jobs"] = 0
    page = store.list(limit=11)
    assert len(page) == 11 and parses["jobs"] == 11
    parses["jobs"] = 0
    page = store.list(tenant="bob", limit=6, after=(page[-1].created_at, page[-1].id))
    assert len(page) == 6 and parses["jobs"] == 6  # another tenant's records are not even read
    parses["jobs"] = 0
    page = store.list(kind="train", state="queued", limit=3)
    reads = parses["jobs"]
    # A filter reads what it skips: everyone's records down to the third match, and no further.
    everyone = full_scan(store)
    assert [record.id for record in page] == full_scan(store, kind="train", state="queued")[:3]
    assert reads == everyone.index(page[-1].id) + 1 < len(everyone)


def test_the_job_index_is_built_once_from_records_written_before_it(tmp_path, parses):
    store = JobStore(tmp_path)
    store.jobs_dir.mkdir(parents=True)
    for number in range(12):
        (store.jobs_dir / f"{job_id(number)}.json").write_text(job(number).model_dump_json())
    assert [record.id for record in JobStore(tmp_path).list(limit=50)] == full_scan(store)
    store.create(job(12))  # made after the build: indexed with its record
    parses["jobs"] = 0
    assert [record.id for record in store.list(limit=2)] == [job_id(12), job_id(11)]
    assert parses["jobs"] == 2  # built once: the second listing scans nothing


def test_deleted_jobs_leave_the_listing_and_the_index(tmp_path):
    store = JobStore(tmp_path)
    for number in range(6):
        store.create(job(number))
    store.delete(job_id(5))
    store.delete(job_id(2))
    assert [record.id for record in store.list()] == [job_id(number) for number in (4, 3, 1, 0)]
    markers = [path.name for path in store.created.root.glob("*/*")]
    assert len(markers) == 4 and not any(name.endswith(job_id(5)) for name in markers)


def test_retention_removes_the_markers_of_what_it_deletes(tmp_path):
    settings = Settings(SHARED_DIR=tmp_path, API_KEY=None, RETENTION_DAYS=30, _env_file=None)
    store = JobStore(tmp_path)
    store.create(job(3))  # failed, long ago
    store.create(job(5))  # running: kept
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(arena_csv(3))
    datasets = DatasetStore(tmp_path, max_bytes=10**6)
    old = datasets.register(csv, name="old", tenant="alice")
    later = datetime.now(UTC).timestamp() + 3650 * 86400  # past every created_at, and RETENTION_DAYS
    delete_expired(settings, store, now=later)
    assert [record.id for record in store.list()] == [job_id(5)]
    assert [path.name[-32:] for path in store.created.root.glob("*/*")] == [job_id(5)]
    assert datasets.list() == [] and not any(name.endswith(old.id) for name in datasets.created.root.glob("*/*"))


def test_a_marker_whose_record_vanished_is_skipped(tmp_path, parses):
    store = JobStore(tmp_path)
    for number in range(8):
        store.create(job(number))
    (store.jobs_dir / f"{job_id(7)}.json").unlink()  # a crash between the record's removal and its marker's
    (store.jobs_dir / f"{job_id(6)}.json").write_text("{ half a record")
    parses["jobs"] = 0
    newest_left = sorted((job(number) for number in range(6)), key=lambda record: (record.created_at, record.id))[-3:]
    assert [record.id for record in store.list(limit=3)] == [record.id for record in reversed(newest_left)]
    assert parses["jobs"] == 4  # the half record, then the page; the vanished one was never there to parse
    assert any(path.name.endswith(job_id(7)) for path in store.created.root.glob("*/*"))  # skipped, not dropped:
    # a marker is made before its record, so one without a record may be a job being created right now


# --- datasets ------------------------------------------------------------------------------------------------


def dataset_meta(number: int) -> DatasetInfo:
    return DatasetInfo(
        id=job_id(1000 + number),
        name=f"d{number}",
        rows=3,
        labelled=True,
        bytes=10,
        sha256="0" * 64,
        created_at=START + timedelta(seconds=number // 2),
        tenant=TENANTS[number % 3],
    )


def full_dataset_scan(store: DatasetStore, *, tenant=None, after=None) -> list[str]:
    infos = [DatasetInfo.model_validate_json(path.read_text()) for path in store.root.glob("[0-9a-f]*/meta.json")]
    kept = [
        info
        for info in infos
        if (tenant is None or info.tenant == tenant) and (after is None or (info.created_at, info.id) < after)
    ]
    return [info.id for info in sorted(kept, key=lambda info: (info.created_at, info.id), reverse=True)]


def write_datasets(store: DatasetStore, count: int) -> None:
    """Datasets as an older SHARED_DIR holds them: folders with a meta.json, written before any index."""
    for number in range(count):
        info = dataset_meta(number)
        folder = store.root / info.id
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(info.model_dump_json())


def test_dataset_pages_equal_a_full_scan_and_read_only_their_own_metas(tmp_path, parses):
    store = DatasetStore(tmp_path, max_bytes=10**6)
    write_datasets(store, 60)
    cursors = [None, (dataset_meta(33).created_at, dataset_meta(33).id), (START, job_id(0))]
    for tenant, after in itertools.product(TENANTS, cursors):
        expected = full_dataset_scan(store, tenant=tenant, after=after)
        for limit in (1, 4, None):
            listed = store.list(tenant=tenant, after=after, limit=limit)
            assert [info.id for info in listed] == expected[:limit], (tenant, after, limit)
    parses["datasets"] = 0
    assert len(store.list(limit=5)) == 5 and parses["datasets"] == 5
    parses["datasets"] = 0
    assert len(store.list(tenant="alice", limit=3)) == 3 and parses["datasets"] == 3


def test_datasets_made_and_deleted_after_the_build_come_and_go(tmp_path):
    store = DatasetStore(tmp_path, max_bytes=10**6)
    write_datasets(store, 3)
    assert len(store.list()) == 3  # builds the index
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(arena_csv(3))
    uploaded = store.register(csv, name="new", tenant="bob")
    assert [info.id for info in store.list(limit=2)] == [uploaded.id, dataset_meta(2).id]
    assert [info.id for info in store.list(tenant="bob")] == [uploaded.id, dataset_meta(1).id]
    store.delete(uploaded.id)
    store.delete(dataset_meta(0).id)
    assert [info.id for info in store.list()] == [dataset_meta(2).id, dataset_meta(1).id]
    assert sorted(path.name[-32:] for path in store.created.root.glob("*/*")) == [
        dataset_meta(1).id,
        dataset_meta(2).id,
    ]
    (store.root / dataset_meta(2).id / "meta.json").unlink()  # a marker whose dataset vanished
    assert [info.id for info in store.list()] == [dataset_meta(1).id]
