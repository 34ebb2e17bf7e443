import numpy as np

from shared.arena_csv import read_arena_csv
from workers.common.pairs import prompt_groups
from workers.reports.evaluate import plot_reliability, score_predictions
from workers.training.splits import split_file


def test_split_is_grouped_by_prompt_and_deterministic(data_csv, tmp_path):
    counts = split_file(data_csv, tmp_path / "one", holdout_fraction=0.2, seed=0)
    assert counts["train.csv"] + counts["holdout.csv"] == 3667
    assert 0.15 < counts["holdout.csv"] / 3667 < 0.25
    train = read_arena_csv(tmp_path / "one" / "train.csv")
    holdout = read_arena_csv(tmp_path / "one" / "holdout.csv")
    assert not set(prompt_groups(train.pairs)) & set(prompt_groups(holdout.pairs))
    test = read_arena_csv(tmp_path / "one" / "holdout_test.csv")
    assert test.labels is None and test.sources is None and test.ids == holdout.ids
    split_file(data_csv, tmp_path / "two", holdout_fraction=0.2, seed=0)
    assert (tmp_path / "one" / "holdout.csv").read_bytes() == (tmp_path / "two" / "holdout.csv").read_bytes()


def test_scores_and_reliability_plot(tmp_path):
    labels = np.eye(3)[[0, 1, 2, 0]]
    perfect = score_predictions(labels, labels * 0.98 + 0.02 / 3, sources=["x", "x", "y", "y"])
    assert perfect["accuracy"] == 1.0 and perfect["log_loss"] < 0.05
    uniform = score_predictions(labels, np.full((4, 3), 1 / 3))
    assert abs(uniform["log_loss"] - np.log(3)) < 1e-9
    assert set(perfect["per_source"]) == {"x", "y"}
    path = plot_reliability(labels, np.full((4, 3), 1 / 3), tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
