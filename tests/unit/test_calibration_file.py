"""The calibration file's schema lives in shared/calibration_file.py: the worker's loader applies it, as the gateway
does at submit (tests/api/test_job_validation.py), so a file one refuses the other refuses too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.calibration_file import read_calibration_file
from tests.unit.test_votes_and_calibration import _synthetic
from workers.predictor.calibration import CalibrationError, Calibrator, fit_calibrator


def _fitted(tmp_path) -> dict:
    pairs, votes, labels = _synthetic(60, np.random.default_rng(0))
    path = fit_calibrator(votes, pairs, labels).save(tmp_path / "calibration.json")
    return json.loads(path.read_text())


def test_a_fitted_calibrator_passes_the_shared_schema(tmp_path):
    data = _fitted(tmp_path)
    assert read_calibration_file(tmp_path / "calibration.json")["n_orders"] == data["n_orders"]
    assert Calibrator.load(tmp_path / "calibration.json").feature_names == data["feature_names"]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"coef": "0"}, "coef"),
        ({"n_orders": 3}, "n_orders"),
        ({"mean": [0.0]}, "mean"),
        ({"intercept": [0.0, "x", 0.0]}, "intercept"),
        ({"inputs": ["votes", "vibes"]}, "inputs"),
    ],
)
def test_the_worker_refuses_a_file_of_the_wrong_shape_when_it_loads_it(tmp_path, change, words):
    data = {**_fitted(tmp_path), **change}
    (tmp_path / "broken.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=words):
        Calibrator.load(tmp_path / "broken.json")
