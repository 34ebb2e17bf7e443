"""The text model on real rows: the embedded MiniLM, LightGBM on both orders, symmetric, saved as JSON."""

import numpy as np
import pytest

from shared.arena_csv import read_arena_csv
from workers.common.pairs import prompt_groups
from workers.common.soft_labels import multiclass_log_loss

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def encoder(model_settings):
    from workers.stacking.text_model import TextEncoder

    return TextEncoder(model_settings.text_encoder_path)


@pytest.fixture(scope="module")
def real_rows(data_csv):
    dataset = read_arena_csv(data_csv, require_labels=True)
    rows = np.random.default_rng(0).permutation(len(dataset))[:1000]
    return [dataset.pairs[row] for row in rows], dataset.labels[rows]


def test_embeddings_are_unit_length_and_shared_texts_are_embedded_once(encoder, real_rows):
    from workers.stacking.text_model import embed_pairs

    pairs = real_rows[0][:20]
    embeddings = embed_pairs(pairs + pairs[:5], encoder)
    np.testing.assert_allclose(np.linalg.norm(embeddings.response_a, axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(embeddings.prompt[20:], embeddings.prompt[:5])
    assert np.abs(embeddings.response_a - embeddings.response_b).max() > 0.05


def test_text_model_beats_the_prior_is_symmetric_and_round_trips(encoder, real_rows, tmp_path):
    from workers.stacking.text_model import TextModel, TextModelError, embed_pairs, fit_text_model

    pairs, labels = real_rows
    embeddings = embed_pairs(pairs, encoder)
    train, test = slice(0, 800), slice(800, 1000)
    groups = prompt_groups(pairs[train])
    fit = fit_text_model(
        pairs[train], labels[train], _rows(embeddings, train), groups=groups, projection_sizes={"diff": 8, "sum": 4}
    )
    model = fit.model
    assert set(model.projections) == {"diff", "sum"}
    probabilities = model.probabilities(pairs[test], _rows(embeddings, test))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    prior = np.tile(labels[train].mean(axis=0), (200, 1))
    assert multiclass_log_loss(labels[test], probabilities) < multiclass_log_loss(labels[test], prior)
    swapped = model.probabilities([pair.swapped() for pair in pairs[test]], _rows(embeddings, test).swapped())
    np.testing.assert_allclose(swapped[:, [1, 0, 2]], probabilities, atol=1e-9)
    # Out-of-fold predictions: one per training row, honest (the fitted model itself does better in sample).
    assert fit.out_of_fold.shape == (800, 3)
    np.testing.assert_allclose(fit.out_of_fold.sum(axis=1), 1.0, atol=1e-6)
    assert model.fitted_on["cv_log_loss"] == pytest.approx(multiclass_log_loss(labels[train], fit.out_of_fold))
    in_sample = model.probabilities(pairs[train], _rows(embeddings, train))
    assert multiclass_log_loss(labels[train], in_sample) < model.fitted_on["cv_log_loss"]
    loaded = TextModel.load(model.save(tmp_path / "text_model.json"))
    np.testing.assert_allclose(loaded.probabilities(pairs[test], _rows(embeddings, test)), probabilities)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TextModelError, match="not an arena-pref text model"):
        TextModel.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"format": "arena-pref-text-model/1"}')
    with pytest.raises(TextModelError, match="arena stack"):
        TextModel.load(tmp_path / "old.json")


def _rows(embeddings, rows: slice):
    from workers.stacking.text_model import PairEmbeddings

    return PairEmbeddings(embeddings.prompt[rows], embeddings.response_a[rows], embeddings.response_b[rows])


def test_special_token_strings_in_user_text_are_embedded_as_text(encoder, monkeypatch):
    """A response that spells "[SEP]" must not split its text into segments for the encoder."""
    tokenizer = encoder.tokenizer
    spelled = tokenizer(["a [SEP] b [CLS]"], split_special_tokens=True)["input_ids"][0]
    assert spelled.count(tokenizer.sep_token_id) == 1 and spelled.count(tokenizer.cls_token_id) == 1  # its own
    seen = []
    original = type(tokenizer).__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("split_special_tokens"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    encoder.encode(["a [SEP] b"])
    assert seen == [True]
