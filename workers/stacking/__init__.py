"""Stacking the judge's outputs: calibration, the text model, evaluation."""
