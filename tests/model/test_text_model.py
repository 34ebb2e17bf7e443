"""The text model on real rows: the embedded MiniLM, LightGBM on both orders, symmetric, saved as JSON."""

import numpy as np
import pytest

from shared.arena_csv import read_arena_csv
from workers.common.pairs import prompt_groups
from workers.common.soft_labels import multiclass_log_loss

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def encoder(model_settings):
    from workers.predictor.sentence_encoder import TextEncoder

    return TextEncoder(model_settings.text_encoder_path)


@pytest.fixture(scope="module")
def real_rows(data_csv):
    dataset = read_arena_csv(data_csv, require_labels=True)
    rows = np.random.default_rng(0).permutation(len(dataset))[:1000]
    return [dataset.pairs[row] for row in rows], dataset.labels[rows]


def test_embeddings_are_unit_length_and_shared_texts_are_embedded_once(encoder, real_rows):
    from workers.predictor.text_model import embed_pairs

    pairs = real_rows[0][:20]
    embeddings = embed_pairs(pairs + pairs[:5], encoder)
    np.testing.assert_allclose(np.linalg.norm(embeddings.response_a, axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(embeddings.prompt[20:], embeddings.prompt[:5])
    assert np.abs(embeddings.response_a - embeddings.response_b).max() > 0.05


def test_text_model_beats_the_prior_is_symmetric_and_round_trips(encoder, real_rows, tmp_path):
    from workers.predictor.text_model import TextModel, TextModelError, embed_pairs, fit_text_model

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
    # The transfer model beside it (what the domain check answers unlike data with): also symmetric, better than the
    # prior here, and weaker than the booster in domain.
    same, transfer = model.outputs(pairs[test], _rows(embeddings, test))
    np.testing.assert_allclose(same, probabilities)
    np.testing.assert_allclose(transfer.sum(axis=1), 1.0, atol=1e-9)
    _, transfer_swapped = model.outputs([pair.swapped() for pair in pairs[test]], _rows(embeddings, test).swapped())
    np.testing.assert_allclose(transfer_swapped[:, [1, 0, 2]], transfer, atol=1e-9)
    transfer_loss = multiclass_log_loss(labels[test], transfer)
    assert multiclass_log_loss(labels[test], probabilities) < transfer_loss < multiclass_log_loss(labels[test], prior)
    loaded = TextModel.load(model.save(tmp_path / "text_model.json"))
    np.testing.assert_allclose(loaded.probabilities(pairs[test], _rows(embeddings, test)), probabilities)
    np.testing.assert_allclose(loaded.outputs(pairs[test], _rows(embeddings, test))[1], transfer)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TextModelError, match="not an arena-pref text model"):
        TextModel.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"format": "arena-pref-text-model/1"}')
    with pytest.raises(TextModelError, match="arena stack"):
        TextModel.load(tmp_path / "old.json")


def _rows(embeddings, rows: slice):
    from workers.predictor.text_model import PairEmbeddings

    return PairEmbeddings(embeddings.prompt[rows], embeddings.response_a[rows], embeddings.response_b[rows])


def test_special_token_strings_in_user_text_are_embedded_as_text(encoder):
    """A response that spells "[SEP]" must not split its text into segments for the encoder."""
    from workers.predictor.sentence_encoder import token_ids

    (ids,) = token_ids(["a [SEP] b [CLS]"], encoder.tokenizer, max_tokens=256)
    sep, cls = encoder.tokenizer.token_to_id("[SEP]"), encoder.tokenizer.token_to_id("[CLS]")
    assert ids.count(sep) == 1 and ids.count(cls) == 1  # its own, at the ends
    assert ids[0] == cls and ids[-1] == sep


def _texts(pairs, n: int) -> list[str]:
    from workers.predictor.text_model import _joined

    texts = [_joined(part) for pair in pairs for part in (pair.prompt, pair.response_a, pair.response_b)]
    return list(dict.fromkeys(texts))[:n]


def test_the_encoder_reads_the_tokens_transformers_would(encoder, real_rows, model_settings):
    """The fast tokenizer path gives transformers' tokens (split_special_tokens, truncation) on real texts."""
    from transformers import AutoTokenizer

    from workers.predictor.sentence_encoder import token_ids

    texts = _texts(real_rows[0], 400) + ["", " ", "[PAD][UNK][MASK]", "x" * 5000]
    reference = AutoTokenizer.from_pretrained(model_settings.text_encoder_path)
    expected = reference([text or " " for text in texts], truncation=True, max_length=256, split_special_tokens=True)
    assert token_ids(texts, encoder.tokenizer, max_tokens=256) == expected["input_ids"]


def test_onnx_int8_embeddings_stay_close_to_torch_fp32_and_smoothing_brings_them_closer(real_rows, model_settings):
    from workers.predictor.sentence_encoder import TextEncoder

    texts = _texts(real_rows[0], 120)
    fp32 = TextEncoder(model_settings.text_encoder_path, backend="torch", device="cpu").encode(texts)
    smoothed = TextEncoder(model_settings.text_encoder_path, backend="onnx-int8").encode(texts)
    # What a text model fitted on version-2 embeddings is applied with: the plain export.
    plain = TextEncoder(model_settings.text_encoder_path, backend="onnx-int8", embedding_version=2).encode(texts)
    distance_smoothed = 1 - (smoothed * fp32).sum(axis=1)
    distance_plain = 1 - (plain * fp32).sum(axis=1)
    assert distance_smoothed.max() < 0.05 and distance_smoothed.mean() < 0.006, distance_smoothed.mean()
    # Measured on 500 real texts: 1 - cosine 0.0075 plain, 0.0034 smoothed.
    assert distance_smoothed.mean() < 0.7 * distance_plain.mean(), (distance_smoothed.mean(), distance_plain.mean())


def test_a_dataset_embedded_again_is_read_from_the_cache(real_rows, model_settings, tmp_path):
    from workers.predictor.sentence_encoder import open_text_encoder

    settings = model_settings.model_copy(update={"SHARED_DIR": tmp_path})
    texts = _texts(real_rows[0], 100)
    first = open_text_encoder(settings, model_settings.text_encoder_path)
    vectors = first.encode(texts)
    again = open_text_encoder(settings, model_settings.text_encoder_path)
    np.testing.assert_array_equal(again.encode(texts), vectors)
    assert again.processed_tokens == 0  # nothing went through the model
    more = again.encode(texts + ["a text never seen before"] * 1)
    np.testing.assert_array_equal(more[:100], vectors)
    assert 0 < again.processed_tokens < 64  # only the new text


def test_an_onnx_embedding_depends_on_its_text_only_not_on_the_texts_beside_it(real_rows, model_settings):
    """int8 activations are scaled per run: batched, a text's vector would move with its neighbours."""
    from workers.predictor.sentence_encoder import TextEncoder

    texts = _texts(real_rows[0], 40)
    encoder = TextEncoder(model_settings.text_encoder_path, backend="onnx-int8")
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([text]) for text in texts[:8]])
    np.testing.assert_allclose(together[:8], alone, atol=1e-6)


def test_the_unpadded_int8_graph_refuses_a_padded_batch(model_settings):
    from workers.predictor.sentence_encoder import TextEncoder, TextEncoderError

    encoder = TextEncoder(model_settings.text_encoder_path, backend="onnx-int8")
    ids = np.array([[101, 2023, 102], [101, 102, 0]])
    with pytest.raises(TextEncoderError, match="unpadded"):
        encoder._forward(ids, np.array([[1, 1, 1], [1, 1, 0]]))
    assert encoder._forward(ids[:1], np.ones((1, 3), dtype=np.int64)).shape == (1, encoder.hidden_size)


def test_excluded_features_are_never_split_on_and_unknown_names_are_refused(encoder, real_rows):
    """The ablations of scripts/bench/bench_generalisation.py: an excluded column is held at zero while fitting."""
    import lightgbm

    from workers.predictor.text_model import TextModelError, embed_pairs, fit_text_model

    pairs, labels = real_rows[0][:300], real_rows[1][:300]
    embeddings = embed_pairs(pairs, encoder)
    excluded = ["log_chars_diff", "chars_rel_diff", "cos_prompt_diff"]
    fit = fit_text_model(
        pairs, labels, embeddings, groups=prompt_groups(pairs), excluded_features=excluded, max_rounds=60
    )
    booster = lightgbm.Booster(model_str=fit.model.booster)
    importance = dict(zip(fit.model.feature_names, booster.feature_importance("split"), strict=True))
    assert all(importance[name] == 0 for name in excluded) and sum(importance.values()) > 0
    transfer = fit.model.transfer  # the transfer model gives them no weight either
    weights = {fit.model.feature_names[column]: index for index, column in enumerate(transfer["columns"])}
    coefficients = np.asarray(transfer["coefficients"])
    assert all(np.all(coefficients[:, weights[name]] == 0) for name in excluded if name in weights)
    assert "log_chars_diff" in weights and np.abs(coefficients).sum() > 0
    with pytest.raises(TextModelError, match="unknown text-model features"):
        fit_text_model(pairs, labels, embeddings, groups=prompt_groups(pairs), excluded_features=["no_such_column"])
