"""Which judge a request gets: the default predictor unless it names an adapter, a calibration or raw votes."""

from pathlib import Path

import pytest

from shared.adapter_store import list_adapters
from shared.storage import JudgeOptionsError, is_text_predictor, resolve_judge_files


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "SmolLM2-135M-Instruct"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    predictor = tmp_path / "models" / "default"
    predictor.mkdir()
    (predictor / "text_model.json").write_text("{}")
    (predictor / "calibration.json").write_text("{}")
    return tmp_path


def resolve(shared_dir: Path, **options):
    model_path = str(shared_dir / "models" / "SmolLM2-135M-Instruct")
    return resolve_judge_files(shared_dir, model_path, default_predictor="default", **options)


def test_a_plain_request_gets_the_default_predictor(shared_dir):
    _, adapter_dir, calibration = resolve(shared_dir)
    assert adapter_dir == shared_dir / "models" / "default" and calibration is None
    assert is_text_predictor(adapter_dir)


def test_raw_votes_only_when_asked_for(shared_dir):
    model_dir, adapter_dir, calibration = resolve(shared_dir, raw=True)
    assert model_dir.name == "SmolLM2-135M-Instruct" and adapter_dir is None and calibration is None
    with pytest.raises(JudgeOptionsError, match="raw=true"):
        resolve(shared_dir, model="SmolLM2-135M-Instruct")
    with pytest.raises(JudgeOptionsError, match="drop one"):
        resolve(shared_dir, raw=True, calibration="models/default/calibration.json")


def test_a_missing_default_predictor_says_how_to_make_it(shared_dir):
    (shared_dir / "models" / "default" / "text_model.json").unlink()
    with pytest.raises(FileNotFoundError, match="make setup") as error:
        resolve(shared_dir)
    assert "arena train --text-only" in str(error.value) and str(shared_dir) not in str(error.value)


def test_a_text_predictor_under_adapters_is_an_adapter_without_an_llm(shared_dir):
    folder = shared_dir / "adapters" / "my-text"
    folder.mkdir(parents=True)
    (folder / "text_model.json").write_text("{}")
    (folder / "metrics.json").write_text('{"rows": 12, "out_of_fold": {"log_loss": 0.9}}')
    # The judge model is not needed: a text predictor runs without it.
    (shared_dir / "models" / "SmolLM2-135M-Instruct" / "config.json").unlink()
    _, adapter_dir, _ = resolve(shared_dir, adapter="my-text")
    assert adapter_dir == folder
    [info] = list_adapters(shared_dir)
    assert (info.name, info.kind, info.train_rows, info.calibrated_val_log_loss) == ("my-text", "text", 12, 0.9)
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve(shared_dir, raw=True)
