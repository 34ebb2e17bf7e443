"""The one rule for host paths in answers (shared/storage.py) and the error-body cap (api/errors.py), without a
worker; tests/integration/test_no_host_paths.py scans a whole stack's answers with them."""

from __future__ import annotations

import json

from api.errors import ERROR_BODY_BYTES, clip, validation_errors_body
from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord
from shared.storage import public_path, redact_host_paths


def test_paths_become_relative_to_shared_dir_or_bare_names(tmp_path):
    shared_dir = tmp_path / "shared"
    assert public_path(shared_dir / "models" / "SmolLM2-135M-Instruct", shared_dir) == "models/SmolLM2-135M-Instruct"
    assert public_path("/opt/weights/SmolLM2-135M-Instruct/", shared_dir) == "SmolLM2-135M-Instruct"
    assert public_path("adapters/judge-v1", shared_dir) == "adapters/judge-v1"
    text = (
        f"{shared_dir}/adapters/j/calibration.json is bad; cache /root/.cache/hf/model.bin; SHARED_DIR is"
        f" {shared_dir}; see GET /v1/jobs/abc, redis://127.0.0.1:6379/14, http://host:8000/v1/score; A / B / tie"
    )
    assert redact_host_paths(text, shared_dir) == (
        "adapters/j/calibration.json is bad; cache model.bin; SHARED_DIR is SHARED_DIR; see GET /v1/jobs/abc,"
        " redis://127.0.0.1:6379/14, http://host:8000/v1/score; A / B / tie"
    )
    nested = {"judge": {"model": f"{shared_dir.resolve()}/models/m", "sizes": [1, "/home/u/x/y"]}, "rows": 3}
    assert redact_host_paths(nested, shared_dir) == {"judge": {"model": "models/m", "sizes": [1, "y"]}, "rows": 3}


def test_job_records_are_stored_without_host_paths(tmp_path):
    store = JobStore(tmp_path / "shared")
    job_id = "e" * 32
    store.create(
        JobRecord(id=job_id, kind="predict", chunks=[ChunkRecord(index=0, queue="cpu", start=0, stop=1, task_id="t")])
    )
    store.update_chunk(job_id, 0, summary={"judge": {"model": "/work/main/var/shared/models/SmolLM2-135M-Instruct"}})
    store.update(job_id, lambda record: setattr(record, "result", {"paths": ["/tmp/x/shared/adapters/a"]}))
    record = store.fail(job_id, "OSError: [Errno 28] No space left on device: '/srv/data/x/votes.npz'")
    assert record.chunks[0].summary == {"judge": {"model": "SmolLM2-135M-Instruct"}}
    assert record.result == {"paths": ["a"]}
    assert record.error == "OSError: [Errno 28] No space left on device: 'votes.npz'"


def test_clip_measures_json_bytes():
    for text in ("x" * 5000, "é" * 5000, "\x00" * 5000, "🙂" * 5000):
        clipped = clip(text, 200)
        assert len(json.dumps(clipped, ensure_ascii=False).encode()) - 2 <= 200 and "5,000 characters" in clipped
    assert clip("short", 200) == "short"


def test_validation_errors_fit_the_body_cap():
    errors = [{"type": "extra_forbidden", "loc": ("body", f"{index}" * 10_000), "msg": "x"} for index in range(1000)]
    body = validation_errors_body([{"type": "missing", "loc": ("body", "dataset"), "msg": "Field required"}, *errors])
    assert len(json.dumps(body, ensure_ascii=False).encode()) <= ERROR_BODY_BYTES
    assert body["detail"][0] == {"type": "missing", "loc": ["body", "dataset"], "msg": "Field required"}
    assert body["detail"][-1]["type"] == "more_errors" and "more error(s) not shown" in body["detail"][-1]["msg"]
