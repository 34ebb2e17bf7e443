import numpy as np
import pytest

from shared.arena_csv import Pair
from workers.common.soft_labels import multiclass_log_loss
from workers.judge.outcomes import unswap_classes, unswap_votes
from workers.judge.votes import aggregate_votes, tta_probabilities
from workers.predictor.calibration import CalibrationError, Calibrator, fit_calibrator, mirror_votes


def logprobs(*rows):
    probabilities = np.array(rows, dtype=float)
    return np.log(probabilities / probabilities.sum(axis=-1, keepdims=True))


def test_aggregate_is_softmax_of_expected_votes_and_ignores_na():
    votes = logprobs(*[[1.0, 1e-30, 1e-30, 1e-30]] * 5)  # five sure votes for A
    probabilities = aggregate_votes(np.maximum(votes, -50))
    expected = np.exp([5, 0, 0]) / np.exp([5, 0, 0]).sum()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    all_na = aggregate_votes(logprobs(*[[1e-9, 1e-9, 1e-9, 1.0]] * 5))
    np.testing.assert_allclose(all_na, [1 / 3] * 3, atol=1e-6)


def test_unswap_maps_first_position_votes_back_to_the_original_pair():
    # With B shown first, a vote "A" is a vote for the original B.
    swapped_order_votes = logprobs([0.7, 0.1, 0.15, 0.05])
    np.testing.assert_allclose(np.exp(unswap_votes(swapped_order_votes))[0], [0.1, 0.7, 0.15, 0.05])
    np.testing.assert_allclose(unswap_classes(np.array([0.6, 0.3, 0.1])), [0.3, 0.6, 0.1])


def test_tta_cancels_a_pure_position_bias():
    # A judge that always prefers whatever is shown first: after un-swapping both orders disagree, so
    # the average is symmetric between A and B.
    first_wins = logprobs(*[[0.8, 0.1, 0.08, 0.02]] * 5)
    order0 = first_wins
    order1 = unswap_votes(first_wins)
    probabilities = tta_probabilities(np.stack([order0, order1])[None])
    assert probabilities.shape == (1, 3)
    assert probabilities[0, 0] == pytest.approx(probabilities[0, 1])


def _synthetic(n, rng):
    pairs, votes, labels = [], [], []
    for index in range(n):
        length_a, length_b = rng.integers(1, 400, size=2)
        pairs.append(Pair(str(index), (f"prompt {index % 50}",), ("x" * length_a,), ("y" * length_b,)))
        votes.append(rng.dirichlet(np.ones(4), size=(2, 5)))
        # Longer response wins more often: the calibrator must find that in the length features.
        p_a = 0.15 + 0.7 * (length_a > length_b)
        outcome = rng.choice(3, p=[p_a * 0.75, (1 - p_a) * 0.75, 0.25])
        labels.append(np.eye(3)[outcome])
    return pairs, np.log(np.array(votes)), np.array(labels)


def test_logistic_calibrator_learns_signal_and_is_symmetric(tmp_path):
    rng = np.random.default_rng(0)
    pairs, votes, labels = _synthetic(600, rng)
    calibrator = fit_calibrator(votes[:400], pairs[:400], labels[:400])
    held_out = calibrator.predict(votes[400:], pairs[400:])
    prior = np.tile(labels[:400].mean(axis=0), (200, 1))
    assert multiclass_log_loss(labels[400:], held_out) < multiclass_log_loss(labels[400:], prior) - 0.05
    mirrored = calibrator.predict(mirror_votes(votes[400:]), [pair.swapped() for pair in pairs[400:]])
    np.testing.assert_allclose(unswap_classes(mirrored), held_out, atol=1e-9)
    loaded = Calibrator.load(calibrator.save(tmp_path / "calibration.json"))
    np.testing.assert_allclose(loaded.predict(votes[400:], pairs[400:]), held_out)


def test_temperature_calibrator_softens_overconfident_votes():
    rng = np.random.default_rng(1)
    pairs, _, labels = _synthetic(300, rng)
    sure_a = np.log(np.tile([0.97, 0.01, 0.01, 0.01], (300, 2, 5, 1)))
    calibrator = fit_calibrator(sure_a, pairs, labels, method="temperature")
    raw_loss = multiclass_log_loss(labels, aggregate_votes(sure_a).mean(axis=1))
    assert multiclass_log_loss(labels, calibrator.predict(sure_a, pairs)) < raw_loss


def test_calibrator_refuses_the_wrong_number_of_orders():
    rng = np.random.default_rng(2)
    pairs, votes, labels = _synthetic(120, rng)
    calibrator = fit_calibrator(votes, pairs, labels)
    with pytest.raises(CalibrationError, match="drop --no-tta"):
        calibrator.predict(votes[:, :1], pairs)


def test_bad_calibration_files_are_clear(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        Calibrator.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        Calibrator.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(CalibrationError, match="not an arena-pref calibration"):
        Calibrator.load(tmp_path / "other.json")
