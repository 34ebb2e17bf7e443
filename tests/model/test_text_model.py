"""The text model on real rows: the embedded MiniLM, LightGBM on both orders, symmetric, saved as JSON."""

import numpy as np
import pytest

from workers.pipelines.calibration import multiclass_log_loss, prompt_groups
from workers.pipelines.data_io import read_arena_csv

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def encoder(model_settings):
    from workers.pipelines.text_features import TextEncoder

    return TextEncoder(model_settings.text_encoder_path)


@pytest.fixture(scope="module")
def real_rows(data_csv):
    dataset = read_arena_csv(data_csv, require_labels=True)
    rows = np.random.default_rng(0).permutation(len(dataset))[:500]
    return [dataset.pairs[row] for row in rows], dataset.labels[rows]


def test_embeddings_are_unit_length_and_shared_texts_are_embedded_once(encoder, real_rows):
    from workers.pipelines.text_features import embed_pairs

    pairs = real_rows[0][:20]
    embeddings = embed_pairs(pairs + pairs[:5], encoder)
    np.testing.assert_allclose(np.linalg.norm(embeddings.response_a, axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(embeddings.prompt[20:], embeddings.prompt[:5])
    assert np.abs(embeddings.response_a - embeddings.response_b).max() > 0.05


def test_text_model_beats_the_prior_is_symmetric_and_round_trips(encoder, real_rows, tmp_path):
    from workers.pipelines.text_features import TextModel, TextModelError, embed_pairs, fit_text_model

    pairs, labels = real_rows
    embeddings = embed_pairs(pairs, encoder)
    train, test = slice(0, 400), slice(400, 500)
    model = fit_text_model(
        pairs[train], labels[train], _rows(embeddings, train), groups=prompt_groups(pairs[train]), n_components=8
    )
    probabilities = model.probabilities(pairs[test], _rows(embeddings, test))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    prior = np.tile(labels[train].mean(axis=0), (100, 1))
    assert multiclass_log_loss(labels[test], probabilities) < multiclass_log_loss(labels[test], prior)
    swapped = model.probabilities([pair.swapped() for pair in pairs[test]], _rows(embeddings, test).swapped())
    np.testing.assert_allclose(swapped[:, [1, 0, 2]], probabilities, atol=1e-9)
    loaded = TextModel.load(model.save(tmp_path / "text_model.json"))
    np.testing.assert_allclose(loaded.probabilities(pairs[test], _rows(embeddings, test)), probabilities)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TextModelError, match="not an arena-pref text model"):
        TextModel.load(tmp_path / "bad.json")


def _rows(embeddings, rows: slice):
    from workers.pipelines.text_features import PairEmbeddings

    return PairEmbeddings(embeddings.prompt[rows], embeddings.response_a[rows], embeddings.response_b[rows])
