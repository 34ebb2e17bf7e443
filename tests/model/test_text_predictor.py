"""The default predict path on real rows: fit a text predictor, predict prompts it never saw, check it is useful."""

import json
import zlib

import numpy as np
import pandas as pd
import pytest

from shared.arena_csv import read_arena_csv
from workers.common.soft_labels import multiclass_log_loss
from workers.judge.outcomes import unswap_classes
from workers.predictor.predictor import Predictor, PredictRequest
from workers.predictor.text_model import TEXT_RECIPE_VERSION
from workers.training.text_predictor import MIN_CALIBRATION_ROWS, fit_text_predictor, text_predictor_is_current

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def split(data_csv, tmp_path_factory):
    """900 real rows, a third of the prompts held out (whole prompt groups, as `arena split` does)."""
    folder = tmp_path_factory.mktemp("text-predictor")
    frame = pd.read_csv(data_csv, dtype=str, keep_default_na=False).sample(900, random_state=0)
    held_out = frame["prompt"].map(lambda prompt: zlib.crc32(prompt.encode()) % 3 == 0)
    frame[~held_out].to_csv(folder / "train.csv", index=False)
    frame[held_out].to_csv(folder / "holdout.csv", index=False)
    return folder


def test_a_text_predictor_beats_the_class_prior_on_unseen_prompts_and_is_symmetric(split, model_settings):
    predictor_dir = split / "predictor"
    metrics = fit_text_predictor(
        inputs=[split / "train.csv"], output_dir=predictor_dir, text_encoder=model_settings.text_encoder_path
    )
    assert sorted(path.name for path in predictor_dir.iterdir()) == [
        "calibration.json",
        "domain_reference.npz",
        "metrics.json",
        "text_model.json",
    ]
    assert json.loads((predictor_dir / "metrics.json").read_text())["rows"] == metrics["rows"]
    assert text_predictor_is_current(predictor_dir, inputs=[split / "train.csv"])
    assert not text_predictor_is_current(predictor_dir, inputs=[split / "holdout.csv"])
    # Fitted on the CPU default backend; one fitted on another backend is not current for set-up (it refits).
    assert metrics["encoder_backend"] == "onnx-int8"
    assert text_predictor_is_current(predictor_dir, inputs=[split / "train.csv"], encoder_backend="onnx-int8")
    assert not text_predictor_is_current(predictor_dir, inputs=[split / "train.csv"], encoder_backend="torch")

    train = read_arena_csv(split / "train.csv", require_labels=True)
    holdout = read_arena_csv(split / "holdout.csv", require_labels=True)
    request = PredictRequest.from_cli(model_settings, adapter=predictor_dir, tta=False)
    predictor = Predictor.open(model_settings, request)
    judge, calibrator = predictor.judge, predictor.calibrator
    assert judge.engine is None and judge.classifier is None and predictor.description["kind"] == "text model"
    assert calibrator.inputs == ["text"] and predictor.calibration_path == predictor_dir / "calibration.json"
    progress = []
    prediction = predictor.predict(holdout, on_progress=lambda done, total: progress.append(done))
    assert progress[-1] == len(holdout) and prediction.calibrated
    assert progress == sorted(progress) and len(progress) > 2  # embedding, then features: never backwards
    assert judge.text_encoder.backend == "onnx-int8"  # applied with the backend it was fitted on

    prior = np.tile(train.labels.mean(axis=0), (len(holdout), 1))
    held_out_log_loss = multiclass_log_loss(holdout.labels, prediction.probabilities)
    assert held_out_log_loss < multiclass_log_loss(holdout.labels, prior) < np.log(3)

    # Swapping A and B swaps the output exactly, given the same embeddings (re-embedding in another batch order
    # changes bf16 padding and so the embeddings' last bits, which is why this reuses them).
    from workers.predictor.text_model import embed_pairs

    embeddings = embed_pairs(holdout.pairs, judge.text_encoder)
    mirrored = [pair.swapped() for pair in holdout.pairs]
    text = judge.text_model.log_probabilities(holdout.pairs, embeddings)
    text_mirrored = judge.text_model.log_probabilities(mirrored, embeddings.swapped())
    np.testing.assert_allclose(unswap_classes(text_mirrored), text, atol=1e-9)
    direct = calibrator.predict(None, holdout.pairs, text_logprobs=text)
    swapped = calibrator.predict(None, mirrored, text_logprobs=text_mirrored)
    np.testing.assert_allclose(unswap_classes(swapped), direct, atol=1e-9)

    # A text model fitted on version-2 embeddings (plain int8) is applied with that export, and set-up refits it.
    from shared.artifacts import TEXT_MODEL_NAME
    from workers.predictor.predictor import _open_text_model

    fitted = json.loads((predictor_dir / TEXT_MODEL_NAME).read_text())
    fitted["fitted_on"]["embedding_version"] = 2
    (predictor_dir / TEXT_MODEL_NAME).write_text(json.dumps(fitted))
    _, old_encoder = _open_text_model(model_settings, predictor_dir)
    assert old_encoder.embedding_version == 2 and old_encoder.key_source.name == "model-int8.onnx"
    assert old_encoder.cache_key != judge.text_encoder.cache_key
    assert not text_predictor_is_current(predictor_dir, inputs=[split / "train.csv"], encoder_backend="onnx-int8")


def test_more_rows_than_max_rows_are_refused_before_anything_is_embedded(split, tmp_path):
    from workers.predictor.text_model import TextModelError

    with pytest.raises(TextModelError, match="over the limit of 100 \\(TEXT_FIT_MAX_ROWS\\)"):
        fit_text_predictor(
            inputs=[split / "train.csv", split / "holdout.csv"],
            output_dir=tmp_path / "predictor",
            text_encoder=str(tmp_path / "no-encoder-needed"),
            input_names=["mine", "theirs"],
            max_rows=100,
        )
    assert not (tmp_path / "predictor").exists()


def test_the_calibrator_is_fitted_on_the_users_rows_when_other_rows_are_mixed_in(split, tmp_path, model_settings):
    """calibration_inputs (the REST fit mixing in the shipped data): the calibrator sees the first inputs' rows."""
    train_rows = len(read_arena_csv(split / "train.csv", require_labels=True))
    metrics = fit_text_predictor(
        inputs=[split / "train.csv", split / "holdout.csv"],
        output_dir=tmp_path / "predictor",
        text_encoder=model_settings.text_encoder_path,
        input_names=["mine", "shipped"],
        input_weights=[1.0, 0.1],
        calibration_inputs=1,
    )
    assert train_rows >= MIN_CALIBRATION_ROWS and metrics["calibrator_rows"] == train_rows < metrics["rows"]
    assert metrics["recipe_version"] == TEXT_RECIPE_VERSION
    calibration = json.loads((tmp_path / "predictor" / "calibration.json").read_text())
    assert calibration["fitted_on"]["rows"] == train_rows
    inputs = [split / "train.csv", split / "holdout.csv"]
    assert text_predictor_is_current(tmp_path / "predictor", inputs=inputs)
    stored = json.loads((tmp_path / "predictor" / "metrics.json").read_text())
    (tmp_path / "predictor" / "metrics.json").write_text(json.dumps({**stored, "recipe_version": 1}))
    assert not text_predictor_is_current(tmp_path / "predictor", inputs=inputs)  # set-up refits an older recipe
