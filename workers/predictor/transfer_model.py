"""The transfer model: what a text predictor answers for data unlike its training data.

A multinomial logistic regression on the length and style features only (no embeddings), standardised and held
near zero by a strong L2 penalty. In domain it is far weaker than the LightGBM text model (0.98 against 0.88 by
grouped CV on ../shared/data), but on a source the predictor never saw it is better than anything else measured
there: leave-one-source-out 1.006 row-weighted against 1.056 for the text model and 1.025 for the text model shrunk
toward the training prior (scripts/bench/bench_generalisation.py, docs/benchmarks.md "Generalisation"). The boosted
trees learn which styles win *in these sources*; a few small, shared linear weights (longer and more structured
answers tend to win, refusals lose, alike answers tie) are what carries over to a new one.

The domain check (workers/predictor/domain.py) uses it for a job of DOMAIN_SHRINK_MIN_ROWS or more rows that it
finds unlike the training data.
"""

from __future__ import annotations

import numpy as np

from workers.judge.outcomes import unswap_classes

# The L2 penalty, as sklearn's C (inverse strength, on standardised features) times the pairs' total weight: the
# penalty has to hold whatever the row count, as the gap between sources does not shrink with more rows of them.
# Leave-one-source-out on ../shared/data, with C fixed: 1.0143 at 1e-4, 1.0074 at 2e-4, 1.0056 at 3e-4, 1.0108 at
# 1e-3, 1.0252 at 3e-3 (chosen for each left-out source on the other four alone: 2e-4 to 5e-4, scoring 1.0078);
# scaled this way: 1.0078 at 0.5, 1.0060 at 0.9, 1.0076 at 1.5 (~2,900 training pairs: 0.9 is C = 3e-4).
TRANSFER_INVERSE_REGULARISATION_PER_PAIR = 0.9
TRANSFER_MODEL_VERSION = 1


def fit_transfer_model(
    features: np.ndarray, mirrored: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, columns: list[int]
) -> dict:
    """Fit on both orders of every pair (`features` and `mirrored`, the same columns for the swapped pairs), so the
    model is symmetric like the text model. Returns its JSON-ready parameters."""
    from sklearn.linear_model import LogisticRegression

    from workers.common.soft_labels import soft_label_rows

    inputs = np.vstack([features[:, columns], mirrored[:, columns]])
    mean, scale = inputs.mean(axis=0), inputs.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)  # a constant column stays zero rather than dividing by zero
    rows, classes, row_weights, _ = soft_label_rows(
        (inputs - mean) / scale, np.vstack([labels, unswap_classes(labels)]), np.concatenate([weights, weights])
    )
    inverse_regularisation = TRANSFER_INVERSE_REGULARISATION_PER_PAIR / max(float(np.sum(weights)), 1e-9)
    model = LogisticRegression(C=inverse_regularisation, max_iter=2000).fit(rows, classes, sample_weight=row_weights)
    coefficients = np.zeros((3, len(columns)))
    intercepts = np.full(3, -30.0)  # a class absent from the labels gets (almost) no probability
    if len(model.classes_) > 2:
        coefficients[model.classes_], intercepts[model.classes_] = model.coef_, model.intercept_
    else:  # sklearn's binary form, sigmoid(z) for the second class, is the softmax of (-z / 2, z / 2)
        coefficients[model.classes_] = [-model.coef_[0] / 2, model.coef_[0] / 2]
        intercepts[model.classes_] = [-model.intercept_[0] / 2, model.intercept_[0] / 2]
    return {
        "version": TRANSFER_MODEL_VERSION,
        "columns": [int(column) for column in columns],
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coefficients": coefficients.tolist(),
        "intercepts": intercepts.tolist(),
        "inverse_regularisation": inverse_regularisation,
    }


def transfer_probabilities(parameters: dict, features: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """(n, 3) probabilities of (A, B, tie), the pair and its mirror averaged."""
    columns = parameters["columns"]
    mean, scale = np.asarray(parameters["mean"]), np.asarray(parameters["scale"])
    coefficients, intercepts = np.asarray(parameters["coefficients"]), np.asarray(parameters["intercepts"])

    def one_side(inputs: np.ndarray) -> np.ndarray:
        logits = ((inputs[:, columns] - mean) / scale) @ coefficients.T + intercepts
        logits -= logits.max(axis=1, keepdims=True)
        exponentials = np.exp(logits)
        return exponentials / exponentials.sum(axis=1, keepdims=True)

    return 0.5 * (one_side(features) + unswap_classes(one_side(mirrored)))
