"""Reports on predictions: scores and figures (evaluate.py), arena leaderboards (leaderboard.py).

They read what the predictor wrote; the predictor and the judge never import them (tests/unit/test_worker_layers.py).
"""
