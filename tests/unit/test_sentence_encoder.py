"""The sentence encoder's batching and its embedding cache (workers/predictor/sentence_encoder.py), without a model."""

import os
import time

import numpy as np
import pytest

from workers.predictor.sentence_encoder import (
    EmbeddingCache,
    TextEncoderError,
    length_batches,
    resolve_backend,
    text_digest,
)


def test_length_batches_cover_every_row_once_within_both_budgets():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 257, size=1000).tolist()
    batches = length_batches(lengths, batch_tokens=4096, max_batch=64)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    for batch in batches:
        width = max(lengths[row] for row in batch)
        assert len(batch) <= 64
        assert len(batch) == 1 or len(batch) * width <= 4096


def test_length_batches_group_similar_lengths_so_little_is_padding():
    lengths = [5, 250, 6, 251, 7, 252] * 50
    batches = length_batches(lengths, batch_tokens=100_000, max_batch=150)
    real = sum(lengths)
    padded = sum(len(batch) * max(lengths[row] for row in batch) for batch in batches)
    assert padded / real < 1.05  # mixed in file order, half of every batch would be padding


def test_a_text_longer_than_the_token_budget_gets_a_batch_of_its_own():
    assert [batch.tolist() for batch in length_batches([300, 10], batch_tokens=256, max_batch=8)] == [[1], [0]]


def test_backend_auto_is_onnx_on_a_cpu_and_torch_on_a_gpu():
    assert resolve_backend("auto", "cuda:0") == "torch"
    assert resolve_backend("auto", "cpu") in ("onnx-int8", "torch")
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(TextEncoderError, match="onnx-int8"):
        resolve_backend("tensorrt", "cpu")


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def test_cache_returns_exactly_what_was_stored_and_misses_the_rest(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=1 << 20, min_texts=1)
    texts = [f"text {index}" for index in range(100)]
    vectors = _vectors(100, 0)
    cache.store([text_digest(text) for text in texts[:60]], vectors[:60])
    found, read = cache.lookup([text_digest(text) for text in texts])
    assert found.tolist() == [True] * 60 + [False] * 40
    np.testing.assert_array_equal(read[:60], vectors[:60])
    assert not read[60:].any()


def test_cache_reads_across_packs_and_survives_a_repeated_text(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=1 << 20, min_texts=1)
    first, second = _vectors(3, 1), _vectors(2, 2)
    cache.store([text_digest("a"), text_digest("b"), text_digest("a")], first)
    cache.store([text_digest("c"), text_digest("d")], second)
    found, read = cache.lookup([text_digest(text) for text in ("d", "a", "x", "b")])
    assert found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(read[[0, 1, 3]], [second[1], first[0], first[1]])


def test_cache_keeps_the_most_recently_used_packs_under_its_cap(tmp_path):
    packs = {name: [text_digest(f"{name}{index}") for index in range(200)] for name in "abc"}
    cache = EmbeddingCache(tmp_path, max_bytes=1 << 30, min_texts=1)
    cache.store(packs["a"], _vectors(200, 0))
    pack_bytes = sum(path.stat().st_size for path in tmp_path.glob("*.npy"))
    cache.max_bytes = int(2.5 * pack_bytes)
    cache.store(packs["b"], _vectors(200, 1))
    past = time.time() - 100
    for index_file in tmp_path.glob("*.index.npy"):
        os.utime(index_file, (past, past))
    assert cache.lookup(packs["a"][:1])[0].all()  # a is used again: b is now the oldest
    cache.store(packs["c"], _vectors(200, 2))
    assert cache.lookup(packs["a"])[0].all()
    assert not cache.lookup(packs["b"])[0].any()
    assert cache.lookup(packs["c"])[0].all()
    assert len(list(tmp_path.glob("*.npy"))) == 4  # two packs of two files; no staging files left


def test_a_pack_removed_under_a_reader_is_a_miss_not_an_error(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=1 << 20, min_texts=1)
    digests = [text_digest(f"t{index}") for index in range(10)]
    cache.store(digests, _vectors(10, 0))
    for vectors_file in tmp_path.glob("*.vectors.npy"):
        vectors_file.unlink()
    found, _ = cache.lookup(digests)
    assert not found.any()


def test_cache_is_used_only_for_datasets_and_not_when_capped_at_zero(tmp_path):
    assert not EmbeddingCache(tmp_path, max_bytes=1 << 20, min_texts=64).worth_it(3)
    assert EmbeddingCache(tmp_path, max_bytes=1 << 20, min_texts=64).worth_it(64)
    assert not EmbeddingCache(tmp_path, max_bytes=0, min_texts=1).worth_it(1000)


def test_an_unwritable_cache_costs_only_the_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = EmbeddingCache(blocker / "cache", max_bytes=1 << 20, min_texts=1)
    cache.store([text_digest("a")], _vectors(1, 0))  # logged, not raised
    assert not cache.lookup([text_digest("a")])[0].any()


def test_smoothing_keeps_the_encoder_s_function_and_flattens_its_outlier_channel():
    import torch
    from transformers import BertConfig, BertModel

    from workers.predictor.sentence_encoder import smooth_dense_inputs

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = BertModel(config).eval()
    with torch.no_grad():  # one large channel, as real BERT-style encoders have
        model.embeddings.LayerNorm.weight[5] = 40.0
    rows = [[2, 7, 9, 11, 3], [2, 50, 51, 52, 53, 54, 3]]
    probe = torch.tensor([[2, 20, 30, 40, 3]])
    seen: dict[str, torch.Tensor] = {}

    def query_input(model) -> torch.Tensor:
        query = model.encoder.layer[0].attention.self.query
        handle = query.register_forward_hook(lambda _m, inputs, _o: seen.__setitem__("x", inputs[0]))
        with torch.inference_mode():
            output = model(input_ids=probe).last_hidden_state
        handle.remove()
        return output, seen["x"].abs().amax(dim=(0, 1))

    before, channels_before = query_input(model)
    assert smooth_dense_inputs(model, rows) == 2 * 6  # q, k, v, attention out, up, down in each layer
    after, _ = query_input(model)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    attention = model.encoder.layer[0].attention.self
    # Query, key and value read one tensor: one scale, so one Mul and one int8 quantization in the graph.
    assert attention.query.input_scale is attention.key.input_scale is attention.value.input_scale
    assert model.encoder.layer[0].intermediate.dense.input_scale is not attention.query.input_scale
    channels_after = channels_before * attention.query.input_scale.inverse_scale
    spread = lambda values: float(values.max() / values.median())  # noqa: E731
    assert spread(channels_after) < spread(channels_before) / 3


def test_each_embedding_version_has_its_own_int8_export_and_an_unknown_one_says_to_refit(tmp_path):
    from workers.predictor.sentence_encoder import EMBEDDING_VERSION, onnx_int8_path

    current = onnx_int8_path(tmp_path, embedding_version=EMBEDDING_VERSION)
    assert current != onnx_int8_path(tmp_path, embedding_version=2)
    assert current.parent == tmp_path / "onnx"
    with pytest.raises(TextEncoderError, match="fit it again"):
        onnx_int8_path(tmp_path, embedding_version=99)
