"""Calibrators over a classifier adapter's logits (+ length features): fitting, symmetry, input checks."""

import numpy as np
import pytest

from shared.arena_csv import Pair
from workers.common.soft_labels import multiclass_log_loss
from workers.judge.outcomes import unswap_classes
from workers.predictor.calibration import CalibrationError, Calibrator, fit_calibrator


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.eye(3)[rng.integers(0, 3, n)]
    pairs = [
        Pair(str(i), (f"prompt {i % 30}",), ("a" * int(rng.integers(1, 400)),), ("b" * int(rng.integers(1, 400)),))
        for i in range(n)
    ]
    # Informative logits: the true class gets +1.5, plus noise; order 1 is a noisy copy.
    logits = rng.normal(size=(n, 2, 3)) + 1.5 * labels[:, None, :]
    return pairs, labels, logits


@pytest.mark.parametrize("method", ["logistic", "temperature"])
def test_adapter_calibrator_learns_and_round_trips(tmp_path, method):
    pairs, labels, logits = _data()
    calibrator = fit_calibrator(None, pairs, labels, method=method, adapter_logits=logits)
    assert calibrator.needs_adapter and not calibrator.needs_votes
    probabilities = calibrator.predict(None, pairs, adapter_logits=logits)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert multiclass_log_loss(labels, probabilities) < np.log(3) - 0.1
    loaded = Calibrator.load(calibrator.save(tmp_path / "calibration.json"))
    np.testing.assert_allclose(loaded.predict(None, pairs, adapter_logits=logits), probabilities)


def test_swapping_a_and_b_swaps_the_calibrated_output():
    pairs, labels, logits = _data()
    calibrator = fit_calibrator(None, pairs, labels, adapter_logits=logits)
    direct = calibrator.predict(None, pairs, adapter_logits=logits)
    swapped_logits = unswap_classes(logits[:, ::-1])
    swapped = calibrator.predict(None, [pair.swapped() for pair in pairs], adapter_logits=swapped_logits)
    np.testing.assert_allclose(unswap_classes(swapped), direct, atol=1e-9)


def test_stacked_calibrator_reads_votes_and_adapter():
    pairs, labels, logits = _data()
    votes = np.log(np.full((len(pairs), 2, 5, 4), 0.25))
    calibrator = fit_calibrator(votes, pairs, labels, adapter_logits=logits)
    assert calibrator.inputs == ["votes", "adapter", "length"]
    assert calibrator.predict(votes, pairs, adapter_logits=logits).shape == (len(pairs), 3)
    with pytest.raises(CalibrationError, match="--adapter"):
        calibrator.predict(votes, pairs)
    with pytest.raises(CalibrationError, match="votes"):
        calibrator.predict(np.zeros((len(pairs), 2, 0, 4)), pairs, adapter_logits=logits)


def test_vote_calibrators_written_before_adapters_existed_still_load(tmp_path):
    pairs, labels, _ = _data()
    votes = np.random.default_rng(1).normal(size=(len(pairs), 2, 5, 4))
    votes -= np.log(np.exp(votes).sum(axis=-1, keepdims=True))
    calibrator = fit_calibrator(votes, pairs, labels)
    path = calibrator.save(tmp_path / "old.json")
    import json

    data = json.loads(path.read_text())
    del data["inputs"]  # a file from before the field existed
    path.write_text(json.dumps(data))
    loaded = Calibrator.load(path)
    assert loaded.inputs == ["votes", "length"]
    np.testing.assert_allclose(loaded.predict(votes, pairs), calibrator.predict(votes, pairs))


def test_stack_without_length_features_ignores_lengths_and_round_trips(tmp_path):
    pairs, labels, logits = _data()
    text_logprobs = np.log(np.full((len(pairs), 3), 1 / 3))
    calibrator = fit_calibrator(
        None, pairs, labels, adapter_logits=logits, text_logprobs=text_logprobs, with_length=False
    )
    assert calibrator.inputs == ["adapter", "text"]
    assert not any(name.startswith(("log_chars", "chars_")) for name in calibrator.feature_names)
    loaded = Calibrator.load(calibrator.save(tmp_path / "calibration.json"))
    longer = [Pair(p.id, p.prompt, (p.response_a[0] * 3,), p.response_b) for p in pairs]
    # Lengths are not read: the same logits give the same output whatever the responses' lengths.
    np.testing.assert_allclose(
        loaded.predict(None, longer, adapter_logits=logits, text_logprobs=text_logprobs),
        calibrator.predict(None, pairs, adapter_logits=logits, text_logprobs=text_logprobs),
    )
    with_length = fit_calibrator(None, pairs, labels, adapter_logits=logits, text_logprobs=text_logprobs)
    assert with_length.inputs == ["adapter", "text", "length"]
    assert not np.allclose(
        with_length.predict(None, longer, adapter_logits=logits, text_logprobs=text_logprobs),
        with_length.predict(None, pairs, adapter_logits=logits, text_logprobs=text_logprobs),
    )
