"""The predictor: one predict path (predictor.py), the text model and its sentence encoder, calibration.

Reports (evaluation figures, leaderboards) live in workers/reports and are never imported from here.
"""
