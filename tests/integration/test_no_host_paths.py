"""Answers never name host paths nor echo large inputs (issue 20, item 7): one scan of everything a client sees.

One CPU worker (transformers engine) runs a raw predict job, a score request, a one-step train job and a job that
fails on a broken dataset file; then every JSON answer, every artefact and every job record file is scanned for
SHARED_DIR, the repository root, the temp root and any absolute path. A battery of oversized bad inputs checks
that no error answer exceeds about 1 KiB.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from shared.storage import dataset_csv_path
from tests.api.arena_rows import arena_csv
from tests.integration.conftest import make_stack

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]

# An absolute path with at least two components; API routes (/v1/...) are addresses, not paths.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?!v1/)(?:[\w.-]+/)+[\w.-]+")
ERROR_BODY_LIMIT = 1100  # bytes: "about 1 KiB" with room for the status line's JSON framing


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = make_stack(tmp_path_factory, engine="transformers")
    stack.start_worker("cpu")
    yield stack
    stack.stop()


def host_roots(stack) -> list[str]:
    shared_dir = stack.settings.SHARED_DIR
    roots = {str(shared_dir), str(shared_dir.resolve()), str(REPO_ROOT), str(REPO_ROOT.resolve())}
    roots |= {str(stack.root), str(Path(tempfile.gettempdir()).resolve()) + "/", str(Path.home()) + "/"}
    return sorted(roots)


def host_paths_in(text: str, roots: list[str]) -> list[str]:
    """The host roots and absolute paths `text` names."""
    return [root for root in roots if root in text] + ABSOLUTE_PATH.findall(text)


def test_answers_artefacts_and_records_name_no_host_path(stack):
    client = stack.client
    dataset = stack.upload(arena_csv(4))
    jobs = [stack.predict(dataset["id"])]  # raw votes of the LLM judge: its description names the model
    train = client.post(
        "/v1/jobs/train",
        json={
            "dataset": dataset["id"], "adapter_name": "paths-judge", "max_steps": 1, "max_length": 512,
            "batch_size": 2, "lora_rank": 4, "target_modules": ["q_proj", "v_proj"], "val_fraction": 0.3,
        },
    )  # fmt: skip
    assert train.status_code == 202, train.text
    jobs.append(train.json()["job_id"])
    broken = stack.upload(arena_csv(2, start_id=3000))
    dataset_csv_path(stack.settings.SHARED_DIR, broken["id"]).write_bytes(b"")  # the worker's error names the file
    jobs.append(stack.predict(broken["id"]))

    score = client.post(
        "/v1/score",
        json={"pairs": [{"id": "p1", "prompt": "2 + 2?", "response_a": "4", "response_b": "5"}], "raw": True},
    )
    assert score.status_code == 200, score.text
    answers = {"POST /v1/score": score.text}
    records = [stack.wait_finished(job_id, timeout=600) for job_id in jobs]
    states = [(record["state"], record["error"]) for record in records]
    assert [state for state, _ in states] == ["succeeded", "succeeded", "failed"], states

    for route in ("/v1/jobs", "/v1/adapters", "/v1/adapters/paths-judge", "/v1/datasets", "/healthz", "/readyz"):
        response = client.get(route)
        assert response.status_code == 200, (route, response.text)
        answers[f"GET {route}"] = response.text
    for record in records:
        answers[f"GET /v1/jobs/{record['id']}"] = client.get(f"/v1/jobs/{record['id']}").text
        for name in record["artifacts"]:
            response = client.get(f"/v1/jobs/{record['id']}/artifacts/{name}")
            assert response.status_code == 200, (name, response.text)
            answers[f"artefact {name} of {record['kind']}"] = response.content.decode("latin-1")
    for path in sorted((stack.settings.SHARED_DIR / "jobs").glob("*.json")):
        answers[f"record file {path.name}"] = path.read_text()
    assert {"metrics.json", "submission.csv", "learning_curve.png"} <= {
        name for record in records for name in record["artifacts"]
    }

    roots = host_roots(stack)
    found = {where: paths for where, text in answers.items() if (paths := host_paths_in(text, roots))}
    assert not found, "host paths in answers:\n" + "\n".join(f"{where}: {paths[:3]}" for where, paths in found.items())
    # Named as requests name them: relative to SHARED_DIR.
    assert score.json()["judge"]["model"] == "models/SmolLM2-135M-Instruct", score.json()["judge"]
    assert records[0]["chunks"][0]["summary"]["judge"]["model"] == "models/SmolLM2-135M-Instruct"
    assert client.get("/v1/adapters/paths-judge").json()["base_model"] == "models/SmolLM2-135M-Instruct"
    assert f"datasets/{broken['id']}/dataset.csv" in records[2]["error"], records[2]["error"]


def test_oversized_bad_inputs_get_short_answers(stack):
    client = stack.client
    huge = "x" * 900_000  # under MAX_REQUEST_BYTES (1 MiB): parsed, not refused by size
    pair = {"prompt": "p", "response_a": "a", "response_b": "b"}
    dataset = "a" * 32
    wide_header = ("id," + "h" * 2_000_000 + ",prompt\n1,2,3\n").encode()
    requests = {
        "huge unknown JSON key": lambda: client.post("/v1/jobs/predict", json={"dataset": dataset, huge: 1}),
        "thousands of unknown keys": lambda: client.post(
            "/v1/jobs/predict", json={f"k{i}" * 20: 1 for i in range(5000)}
        ),
        "huge enum value": lambda: client.get("/v1/jobs", params={"state": "s" * 60_000}),
        "huge id in the body": lambda: client.post("/v1/jobs/predict", json={"dataset": huge}),
        "huge id in the URL": lambda: client.get("/v1/jobs/" + "a" * 60_000),
        "huge dataset id in the URL": lambda: client.get("/v1/datasets/" + "a" * 60_000),
        "huge adapter name in the URL": lambda: client.get("/v1/adapters/" + "n" * 60_000),
        "huge artefact name": lambda: client.get(f"/v1/jobs/{dataset}/artifacts/" + "n" * 60_000),
        "huge Idempotency-Key": lambda: client.post(
            "/v1/jobs/predict", json={"dataset": dataset}, headers={"Idempotency-Key": "k" * 60_000}
        ),
        "multi-MB string with a max_length": lambda: client.post("/v1/score", json={"pairs": [{**pair, "id": huge}]}),
        "huge adapter name": lambda: client.post("/v1/jobs/train", json={"dataset": dataset, "adapter_name": huge}),
        "huge list item": lambda: client.post("/v1/jobs/train", json={"dataset": dataset, "target_modules": [huge]}),
        "unterminated JSON": lambda: client.post(
            "/v1/jobs/predict", content=b'{"dataset": "' + b"a" * 500_000, headers={"Content-Type": "application/json"}
        ),
        "CSV with a huge header cell": lambda: client.post(
            "/v1/datasets", files={"file": ("wide.csv", wide_header, "text/csv")}
        ),
        "huge file name": lambda: client.post(
            "/v1/datasets", files={"file": ("f" * 60_000 + ".csv", b"id\n", "text/csv")}
        ),
    }
    sizes = {}
    for what, send in requests.items():
        response = send()
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
        response.json()  # still a JSON body, only shorter
        sizes[what] = len(response.content)
    too_long = {what: size for what, size in sizes.items() if size > ERROR_BODY_LIMIT}
    assert not too_long, f"error bodies over {ERROR_BODY_LIMIT} bytes: {too_long}"
