"""Soft (A, B, tie) labels: the log loss of probabilities against them, and the weighted rows a fitter takes."""

from __future__ import annotations

import numpy as np


def row_log_losses(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    """Each row's log loss (multiclass_log_loss is their mean): per-group losses are sums of these."""
    probabilities = np.clip(probabilities, eps, 1.0)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return -(labels * np.log(probabilities)).sum(axis=1)


def multiclass_log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-15) -> float:
    return float(row_log_losses(labels, probabilities, eps).mean())


def soft_label_rows(features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None):
    """One training row per (pair, class with mass), weighted by that probability (times the pair's weight):
    soft labels as weighted hard labels, for sklearn and LightGBM. Returns rows, classes, weights, pair index."""
    rows, classes = np.nonzero(labels > 0)
    row_weights = labels[rows, classes] if weights is None else labels[rows, classes] * weights[rows]
    return features[rows], classes, row_weights, rows
