"""Every job option a worker would refuse is refused before 202, and every valid one is accepted.

The real gateway app on a temporary SHARED_DIR (tests/api/conftest.py). Model folders are built here: a
config.json and a safetensors file whose header is written by hand (8-byte little-endian length + JSON), the way
the gateway reads them without torch.
"""

from __future__ import annotations

import json
import struct
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.artifacts import TRAIN_JOB_OWNER_NAME
from shared.calibration_file import CALIBRATION_FORMAT
from shared.job_store import JobStore
from shared.schemas import JobRecord
from tests.api.arena_rows import arena_csv
from tests.api.conftest import snapshot

LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


def safetensors_bytes(tensors: dict[str, list[int]]) -> bytes:
    """A real safetensors file of zero-filled float32 tensors: header length, JSON header, data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def llama_tensors(layers: int) -> dict[str, list[int]]:
    tensors = {"model.embed_tokens.weight": [8, 4], "model.norm.weight": [4], "lm_head.weight": [8, 4]}
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.input_layernorm.weight"] = [4]
        tensors.update({f"{prefix}.self_attn.{name}.weight": [4, 4] for name in LLAMA_MODULES})
        tensors.update({f"{prefix}.mlp.{name}.weight": [4, 4] for name in MLP_MODULES})
    return tensors


def write_model(
    settings,
    name: str,
    *,
    layers: int = 4,
    architectures=("LlamaForCausalLM",),
    chunked: bool = False,
    weights: bool = True,
    max_positions: int = 2048,
) -> Path:
    folder = settings.SHARED_DIR / "models" / name
    folder.mkdir(parents=True)
    config = {
        "architectures": list(architectures),
        "model_type": "llama",
        "num_hidden_layers": layers,
        "max_position_embeddings": max_positions,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = llama_tensors(layers)
    if not weights:
        return folder
    if chunked:
        names = sorted(tensors)
        halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
        for chunk, chunk_names in halves.items():
            (folder / chunk).write_bytes(safetensors_bytes({key: tensors[key] for key in chunk_names}))
        weight_map = {key: chunk for chunk, chunk_names in halves.items() for key in chunk_names}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        (folder / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    return folder


@pytest.fixture
def labelled(client) -> str:
    response = client.post("/v1/datasets", files={"file": ("pairs.csv", arena_csv(6), "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def assert_refused(response, status_code: int, *words: str, settings=None) -> None:
    assert response.status_code == status_code, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) < 600, detail
    for word in words:
        assert word in detail, (word, detail)
    if settings is not None:
        assert str(settings.SHARED_DIR) not in detail and "/tmp/" not in detail, detail


# --- train and synth accept a named model folder -------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["single-file", "chunked"])
def test_train_and_synth_accept_a_named_model_folder(client, settings, labelled, chunked):
    write_model(settings, "tiny-llama", chunked=chunked)
    train = client.post("/v1/jobs/train", json={"dataset": labelled, "model": "tiny-llama"})
    assert train.status_code == 202, train.text
    synth = client.post("/v1/jobs/synth", json={"dataset": labelled, "teacher_model": "tiny-llama"})
    assert synth.status_code == 202, synth.text
    params = [job["params"] for job in client.get("/v1/jobs").json()]
    assert {"model": "tiny-llama"}.items() <= params[1].items()
    assert params[0]["teacher_model"] == "tiny-llama"


def test_train_and_synth_refuse_a_folder_that_is_no_usable_base_model(client, settings, labelled):
    write_model(settings, "no-weights", weights=False)
    write_model(settings, "encoder", architectures=("BertModel",))
    broken = write_model(settings, "broken-header")
    (broken / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    escaping = write_model(settings, "escaping-index", chunked=True)
    index = json.loads((escaping / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "../no-weights/config.json"
    (escaping / "model.safetensors.index.json").write_text(json.dumps(index))
    (write_model(settings, "bad-config") / "config.json").write_text("{not json")
    before = snapshot(settings.SHARED_DIR)
    cases = {
        "no-weights": ["no safetensors weights"],
        "encoder": ["not a causal language model", "BertModel"],
        "broken-header": ["not a safetensors file"],
        "escaping-index": ["outside the folder"],
        "bad-config": ["config.json is not readable JSON"],
        "absent": ["not found", "available", "encoder"],
    }
    for name, words in cases.items():
        response = client.post("/v1/jobs/train", json={"dataset": labelled, "model": name})
        assert_refused(response, 422, "model", repr(name), *words, settings=settings)
        response = client.post("/v1/jobs/synth", json={"dataset": labelled, "teacher_model": name})
        assert_refused(response, 422, "teacher_model", repr(name), *words, settings=settings)
    assert client.get("/v1/jobs").json() == []
    assert snapshot(settings.SHARED_DIR) == before


# --- LoRA options, length and memory budget against the model ------------------------------------------------------

ACCEPTED_LORA = [
    {"lora_top_layers": 4},
    {"lora_top_layers": 1, "target_modules": ["q_proj", "down_proj"]},
    {"target_modules": ["self_attn.q_proj"]},
    {"target_modules": ["model.layers.0.self_attn.q_proj"]},
    {"target_modules": ["model.layers.0.self_attn.q_proj"], "lora_top_layers": 2},  # PEFT: a full name skips the filter
    {"target_modules": ["layers.3.self_attn.q_proj"], "lora_top_layers": 2},
    {"target_modules": ["embed_tokens"]},
    {"max_length": 2048},
]
REFUSED_LORA = [
    ({"lora_top_layers": 5}, ["lora_top_layers=5", "4 layers", "at most 4"]),
    ({"target_modules": ["q_proj", "qq_proj"]}, ["target_modules", "'qq_proj'", "q_proj", "up_proj"]),
    ({"target_modules": ["input_layernorm"]}, ["target_modules", "'input_layernorm'"]),
    ({"target_modules": ["lm_head"]}, ["target_modules", "'lm_head'"]),
    ({"target_modules": ["proj"]}, ["target_modules", "'proj'"]),  # PEFT matches whole dotted names only
    ({"target_modules": ["all-linear"]}, ["target_modules", "'all-linear'", "list the modules"]),
    ({"target_modules": ["embed_tokens"], "lora_top_layers": 2}, ["'embed_tokens'", "top 2 layers"]),
    ({"target_modules": ["layers.0.self_attn.q_proj"], "lora_top_layers": 2}, ["top 2 layers"]),
    ({"max_length": 4096}, ["max_length=4096", "2048"]),
]


@pytest.mark.parametrize("options", ACCEPTED_LORA, ids=lambda options: json.dumps(options))
def test_lora_options_the_model_has_are_accepted(client, settings, labelled, options):
    write_model(settings, "tiny-llama", layers=4, max_positions=2048)
    body = {"dataset": labelled, "model": "tiny-llama", "batch_size": 1, **options}
    response = client.post("/v1/jobs/train", json=body)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("options, words", REFUSED_LORA, ids=lambda value: json.dumps(value)[:60])
def test_lora_options_the_model_lacks_are_refused(client, settings, labelled, options, words):
    write_model(settings, "tiny-llama", layers=4, max_positions=2048)
    before = snapshot(settings.SHARED_DIR)
    body = {"dataset": labelled, "model": "tiny-llama", "batch_size": 1, **options}
    assert_refused(client.post("/v1/jobs/train", json=body), 422, *words, settings=settings)
    assert client.get("/v1/jobs").json() == []
    assert snapshot(settings.SHARED_DIR) == before


def test_batch_times_length_over_the_budget_is_refused_with_the_setting_and_grad_accum(client, settings, labelled):
    budget = settings.TRAIN_MAX_BATCH_TOKENS
    over = client.post("/v1/jobs/train", json={"dataset": labelled, "batch_size": 2, "max_length": budget // 2 + 64})
    assert_refused(over, 422, "TRAIN_MAX_BATCH_TOKENS", "grad_accum", "batch_size")
    exact = client.post("/v1/jobs/train", json={"dataset": labelled, "batch_size": 4, "max_length": budget // 4})
    assert exact.status_code == 202, exact.text


def test_the_default_model_is_checked_when_it_says_enough(client, settings, labelled):
    """No `model`: the server's model folder (here the conftest's bare config.json) is read for what it says."""
    default_dir = Path(settings.judge_model_path)
    (default_dir / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "max_position_embeddings": 512}))
    (default_dir / "model.safetensors").write_bytes(safetensors_bytes(llama_tensors(2)))
    refused = client.post("/v1/jobs/train", json={"dataset": labelled, "lora_top_layers": 3})
    assert_refused(refused, 422, "lora_top_layers=3", "the default model", settings=settings)
    refused = client.post("/v1/jobs/train", json={"dataset": labelled, "target_modules": ["c_attn"]})
    assert_refused(refused, 422, "'c_attn'", "q_proj", settings=settings)
    accepted = client.post("/v1/jobs/train", json={"dataset": labelled, "lora_top_layers": 2, "max_length": 512})
    assert accepted.status_code == 202, accepted.text


# --- calibration files are parsed at submit -------------------------------------------------------------------------


def calibration(*, n_orders: int = 2, inputs=("votes", "length"), **overrides) -> dict:
    features = ["f1", "f2"]
    data = {
        "format": CALIBRATION_FORMAT,
        "method": "logistic",
        "n_orders": n_orders,
        "feature_names": features,
        "mean": [0.0, 0.0],
        "scale": [1.0, 1.0],
        "coef": [[0.0, 0.0]] * 3,
        "intercept": [0.0, 0.0, 0.0],
        "regularisation": 0.1,
        "fitted_on": {},
        "inputs": list(inputs),
    }
    return {**data, **overrides}


def write_calibration(settings, name: str, content) -> str:
    path = settings.SHARED_DIR / "models" / "calibrations" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return f"models/calibrations/{name}"


BAD_CALIBRATIONS = {
    "not-json": ("{not json", {}, ["not valid JSON"]),
    "other-format": ({"format": "something-else"}, {}, ["not an arena-pref calibration file"]),
    "missing-field": ({k: v for k, v in calibration().items() if k != "coef"}, {}, ["missing coef", "refit"]),
    "unknown-field": (calibration(extra=1), {}, ["unknown 'extra'"]),
    "coef-shape": (calibration(coef=[[0.0]] * 3), {}, ["coef", "3 rows of 2"]),
    "mean-text": (calibration(mean="0,0"), {}, ["mean"]),
    "bad-method": (calibration(method="isotonic"), {}, ["method"]),
    "bad-inputs": (calibration(inputs=["votes", "vibes"]), {}, ["inputs"]),
    "one-order-with-tta": (calibration(n_orders=1), {}, ["1 order(s)", "set tta=false"]),
    "two-orders-without-tta": (calibration(), {"tta": False}, ["2 order(s)", "set tta=true"]),
    "needs-an-adapter": (calibration(inputs=["adapter", "length"]), {}, ["stacks a trained classifier adapter"]),
    "needs-a-text-model": (calibration(inputs=["text", "length"]), {}, ["stacks the text model"]),
}


@pytest.mark.parametrize("case", BAD_CALIBRATIONS)
def test_a_calibration_the_worker_would_refuse_is_422_for_predict_and_score(client, settings, labelled, case):
    content, options, words = BAD_CALIBRATIONS[case]
    name = write_calibration(settings, f"{case}.json", content)
    before = snapshot(settings.SHARED_DIR)
    response = client.post("/v1/jobs/predict", json={"dataset": labelled, "calibration": name, **options})
    assert_refused(response, 422, name, *words, settings=settings)
    pair = {"prompt": "q", "response_a": "a", "response_b": "b"}
    response = client.post("/v1/score", json={"pairs": [pair], "calibration": name, **options})
    assert_refused(response, 422, name, *words, settings=settings)
    assert client.get("/v1/jobs").json() == []
    assert snapshot(settings.SHARED_DIR) == before


def test_valid_calibrations_are_accepted(client, settings, labelled):
    for options, content in [({}, calibration()), ({"tta": False}, calibration(n_orders=1))]:
        name = write_calibration(settings, f"ok-{len(options)}.json", content)
        response = client.post("/v1/jobs/predict", json={"dataset": labelled, "calibration": name, **options})
        assert response.status_code == 202, response.text
    temperature = calibration(method="temperature", feature_names=[], mean=[], scale=[], coef=[[0.8]], inputs=["votes"])
    name = write_calibration(settings, "temperature.json", temperature)
    response = client.post("/v1/jobs/predict", json={"dataset": labelled, "calibration": name})
    assert response.status_code == 202, response.text


def test_an_adapters_own_calibration_is_checked_too(client, settings, labelled):
    """A classifier adapter's calibration.json applies when the request names none (as on the worker)."""
    adapter_dir = settings.SHARED_DIR / "adapters" / "judge-v1"
    adapter_dir.mkdir(parents=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    (adapter_dir / "calibration.json").write_text(json.dumps(calibration(inputs=["adapter", "length"])))
    response = client.post("/v1/jobs/predict", json={"dataset": labelled, "adapter": "judge-v1", "tta": False})
    assert_refused(response, 422, "adapters/judge-v1/calibration.json", "set tta=true", settings=settings)
    response = client.post("/v1/jobs/predict", json={"dataset": labelled, "adapter": "judge-v1"})
    assert response.status_code == 202, response.text
    # raw: the adapter's softmax, its calibration.json unused, so nothing of it to refuse (as on the worker).
    response = client.post(
        "/v1/jobs/predict", json={"dataset": labelled, "adapter": "judge-v1", "tta": False, "raw": True}
    )
    assert response.status_code == 202, response.text


# --- the adapter name is claimed atomically at submit ---------------------------------------------------------------


def test_of_concurrent_trains_for_one_new_adapter_name_exactly_one_gets_202(client, settings, labelled):
    barrier, results = threading.Barrier(8), []

    def submit() -> None:
        barrier.wait()
        response = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "raced"})
        results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    codes = sorted(code for code, _ in results)
    assert codes == [202] + [409] * 7, results
    (winner,) = [body["job_id"] for code, body in results if code == 202]
    owner = json.loads((settings.SHARED_DIR / "adapters" / "raced" / TRAIN_JOB_OWNER_NAME).read_text())
    assert owner == {"job_id": winner, "tenant": "admin"}
    for code, body in results:
        if code == 409:
            assert winner in body["detail"] and "choose another adapter_name" in body["detail"]
    assert [job["id"] for job in client.get("/v1/jobs").json()] == [winner]


def test_a_replay_with_the_idempotency_key_returns_the_job_holding_the_name(client, labelled):
    key, body = {"Idempotency-Key": "claim-once"}, {"dataset": labelled, "adapter_name": "judge-x"}
    first = client.post("/v1/jobs/train", json=body, headers=key)
    assert first.status_code == 202, first.text
    replay = client.post("/v1/jobs/train", json=body, headers=key)
    assert replay.status_code == 200 and replay.json()["job_id"] == first.json()["job_id"]
    assert client.post("/v1/jobs/train", json=body).status_code == 409


def finished_claim(settings, name: str, state: str, *, finished_ago_s: float, files: tuple[str, ...] = ()) -> str:
    """adapters/<name>/ claimed by a train job that ended in `state` some time ago, with what it left there."""
    job_id = uuid.uuid4().hex
    finished_at = datetime.now(UTC) - timedelta(seconds=finished_ago_s)
    JobStore(settings.SHARED_DIR).create(
        JobRecord(id=job_id, kind="train", state=state, params={"adapter_name": name}, finished_at=finished_at)
    )
    folder = settings.SHARED_DIR / "adapters" / name
    folder.mkdir(parents=True)
    (folder / TRAIN_JOB_OWNER_NAME).write_text(json.dumps({"job_id": job_id}))
    for relative in files:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text("{}")
    return job_id


def test_a_failed_or_cancelled_jobs_name_is_released_unless_it_finished_an_adapter(client, settings, labelled):
    cases = [
        ("cancelled-early", "cancelled", 0, (), 202),
        ("failed-early", "failed", 0, (), 202),
        ("failed-long-ago", "failed", 3600, ("checkpoints/step-000050/adapter.bin",), 202),
        ("failed-just-now", "failed", 1, ("checkpoints/step-000050/adapter.bin",), 409),
        ("failed-but-finished", "failed", 3600, ("metrics.json",), 409),
        ("succeeded", "succeeded", 3600, ("metrics.json", "adapter_config.json"), 409),
    ]
    for name, state, ago, files, expected in cases:
        old_job = finished_claim(settings, name, state, finished_ago_s=ago, files=files)
        response = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": name})
        assert response.status_code == expected, (name, response.text)
        folder = settings.SHARED_DIR / "adapters" / name
        owner = json.loads((folder / TRAIN_JOB_OWNER_NAME).read_text())["job_id"]
        if expected == 202:
            assert owner == response.json()["job_id"], name
            assert sorted(path.name for path in folder.iterdir()) == [TRAIN_JOB_OWNER_NAME], name
        else:
            assert owner == old_job and old_job in response.json()["detail"], name
            assert "choose another adapter_name" in response.json()["detail"]
    assert not [path for path in (settings.SHARED_DIR / "adapters").iterdir() if path.name.startswith(".released")]


def test_a_job_the_broker_did_not_take_gives_its_name_back(client, settings, labelled, monkeypatch):
    import api.routes.jobs as jobs_route

    def refuse(celery, record):
        raise ConnectionError("broker down")

    monkeypatch.setattr(jobs_route, "send_placeholder_job", refuse)
    response = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-z"})
    assert response.status_code == 503, response.text
    assert not (settings.SHARED_DIR / "adapters" / "judge-z").exists()
    monkeypatch.undo()
    assert client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": "judge-z"}).status_code == 202


def test_a_name_held_by_a_file_or_an_adapter_made_by_hand_is_409(client, settings, labelled):
    adapters = settings.SHARED_DIR / "adapters"
    (adapters / "a-file").write_text("not a folder")
    (adapters / "by-hand").mkdir()
    (adapters / "by-hand" / "adapter_config.json").write_text("{}")
    for name in ("a-file", "by-hand"):
        response = client.post("/v1/jobs/train", json={"dataset": labelled, "adapter_name": name})
        assert_refused(response, 409, f"adapters/{name} exists already", "choose another adapter_name")
    assert client.get("/v1/jobs").json() == []


def test_a_teacher_across_gpus_is_refused_at_submit_with_the_reason(settings, labelled):
    # Every worker sees one GPU (one worker per GPU): a teacher split over several could never start its engine.
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.api.conftest import API_KEY

    spread = settings.model_copy(update={"TEACHER_TENSOR_PARALLEL": 2})
    with TestClient(create_app(spread), headers={"X-API-Key": API_KEY}) as client:
        response = client.post("/v1/jobs/synth", json={"dataset": labelled})
        assert_refused(response, 422, "TEACHER_TENSOR_PARALLEL=2", "one GPU", "set TEACHER_TENSOR_PARALLEL=1")
        assert client.get("/v1/jobs").json() == []
