"""The transfer model (workers/predictor/transfer_model.py): symmetric, held near the prior, and sound when the
labels lack a class (a source without ties)."""

import numpy as np

from workers.predictor.transfer_model import fit_transfer_model, transfer_probabilities


def _pairs(rows: int, *, ties: bool, seed: int = 0):
    """One antisymmetric column (A's length minus B's, say) that decides who wins, one symmetric column."""
    rng = np.random.default_rng(seed)
    difference = rng.normal(size=rows)
    alike = rng.normal(size=rows)
    features = np.column_stack([difference, alike])
    mirrored = np.column_stack([-difference, alike])
    winner = np.where(difference + 0.5 * rng.normal(size=rows) > 0, 0, 1)
    if ties:
        winner = np.where(np.abs(difference) < 0.3, 2, winner)
    return features, mirrored, np.eye(3)[winner]


def test_symmetric_and_strongly_held_toward_the_prior():
    features, mirrored, labels = _pairs(4000, ties=True)
    parameters = fit_transfer_model(features, mirrored, labels, np.ones(len(labels)), columns=[0, 1])
    probabilities = transfer_probabilities(parameters, features, mirrored)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(transfer_probabilities(parameters, mirrored, features), probabilities[:, [1, 0, 2]])
    # It learns the direction (A wins more often the larger the difference) ...
    order = np.argsort(features[:, 0])
    assert probabilities[order[-200:], 0].mean() > probabilities[order[:200], 0].mean() + 0.02
    # ... but the penalty keeps it far from the confident answers an unpenalised fit gives on such clean data, and
    # holds as strongly with ten times the rows (the gap between sources does not shrink with more of them).
    from sklearn.linear_model import LogisticRegression

    unpenalised = LogisticRegression(C=1e6, max_iter=2000).fit(features, labels.argmax(axis=1))
    assert unpenalised.predict_proba(features).max() > 0.99 and probabilities.max() < 0.9
    many = _pairs(40_000, ties=True, seed=1)
    larger = fit_transfer_model(*many, np.ones(40_000), columns=[0, 1])
    np.testing.assert_allclose(larger["coefficients"], parameters["coefficients"], atol=0.03)


def test_labels_without_ties_give_ties_no_probability():
    features, mirrored, labels = _pairs(2000, ties=False)
    assert labels[:, 2].sum() == 0
    parameters = fit_transfer_model(features, mirrored, labels, np.ones(len(labels)), columns=[0])
    probabilities = transfer_probabilities(parameters, features, mirrored)
    assert probabilities[:, 2].max() < 1e-9
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert np.corrcoef(features[:, 0], probabilities[:, 0])[0, 1] > 0.99
