"""The arena leaderboard (workers/reports/leaderboard.py): Bradley–Terry on the Elo scale, ties as half a win,
predictions as expected outcomes, bootstrap intervals, the files written and the errors a user can fix."""

import csv
import json
import math

import numpy as np
import pytest

from shared.arena_csv import DataFormatError, read_arena_csv, read_submission, write_submission
from workers.reports.leaderboard import (
    BOARD_COLUMNS,
    LeaderboardError,
    build_leaderboard,
    compare_leaderboards,
    dataset_models,
    write_dataset_leaderboards,
    write_leaderboard_files,
)

A_WINS, B_WINS, TIE = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def rating(board, model: str) -> float:
    return float(board.ratings[board.models.index(model)])


def simulated_battles(true_ratings: dict[str, float], battles: int, *, seed: int, tie_rate: float = 0.0):
    """Battles between random pairs, each outcome drawn from the Bradley–Terry model on the Elo scale."""
    rng = np.random.default_rng(seed)
    names = list(true_ratings)
    models_a, models_b, outcomes = [], [], []
    for _ in range(battles):
        first, second = rng.choice(len(names), size=2, replace=False)
        model_a, model_b = names[first], names[second]
        p_a = 1 / (1 + 10 ** ((true_ratings[model_b] - true_ratings[model_a]) / 400))
        draw = rng.uniform()
        if draw < tie_rate:
            outcomes.append(TIE)
        else:
            outcomes.append(A_WINS if rng.uniform() < p_a else B_WINS)
        models_a.append(model_a)
        models_b.append(model_b)
    return models_a, models_b, np.array(outcomes)


def test_the_true_order_and_ratings_come_back_from_simulated_battles():
    truth = {"strong": 1250.0, "good": 1100.0, "fair": 950.0, "weak": 700.0}
    models_a, models_b, outcomes = simulated_battles(truth, 4000, seed=1)
    board = build_leaderboard(models_a, models_b, outcomes, bootstrap=50, seed=0)
    assert board.models == ["strong", "good", "fair", "weak"]
    assert board.ratings.mean() == pytest.approx(1000.0)
    mean_truth = np.mean(list(truth.values()))
    for model, true_rating in truth.items():
        assert rating(board, model) == pytest.approx(true_rating - mean_truth + 1000, abs=35)
    assert board.battles.sum() == 2 * 4000 and board.total_battles == 4000
    # The win-rate matrix: the row model's mean score against the column model, complementary across the diagonal.
    assert np.isnan(np.diag(board.win_rates)).all()
    off_diagonal = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose((board.win_rates + board.win_rates.T)[off_diagonal], 1.0)
    assert board.win_rates[0, 3] > 0.9


def test_a_model_winning_three_of_four_is_400_log10_3_points_ahead():
    outcomes = np.array([A_WINS, A_WINS, A_WINS, B_WINS] * 10)
    board = build_leaderboard(["strong"] * 40, ["weak"] * 40, outcomes, bootstrap=0)
    assert board.models == ["strong", "weak"]
    # The maximum-likelihood gap: the weak prior moves it by well under a point at 40 battles.
    assert rating(board, "strong") - rating(board, "weak") == pytest.approx(400 * math.log10(3), abs=0.5)
    assert rating(board, "strong") + rating(board, "weak") == pytest.approx(2000)
    assert math.isnan(board.ci_low[0]) and board.rows()[0]["ci_low"] is None


def test_ties_count_half_a_win_each_way_and_predictions_count_as_expected_outcomes():
    even = build_leaderboard(["x"] * 4, ["y"] * 4, np.array([A_WINS, B_WINS, TIE, TIE]), bootstrap=0)
    assert rating(even, "x") == pytest.approx(rating(even, "y"))
    # A win and a tie: a score of 0.75 for x, exactly as if x had won 3 of 4.
    win_and_tie = build_leaderboard(["x"] * 40, ["y"] * 40, np.array([A_WINS, TIE] * 20), bootstrap=0)
    three_of_four = build_leaderboard(
        ["x"] * 40, ["y"] * 40, np.array([A_WINS, A_WINS, A_WINS, B_WINS] * 10), bootstrap=0
    )
    np.testing.assert_allclose(win_and_tie.ratings, three_of_four.ratings, atol=1e-3)
    # A prediction is an expected outcome: P(A) + P(tie) / 2 = 0.75 in each battle.
    predicted = build_leaderboard(["x"] * 40, ["y"] * 40, np.tile([0.6, 0.1, 0.3], (40, 1)), bootstrap=0)
    np.testing.assert_allclose(predicted.ratings, three_of_four.ratings, atol=1e-3)


def test_the_sides_and_the_row_order_do_not_matter():
    models_a, models_b, outcomes = simulated_battles({"a": 1100, "b": 1000, "c": 900}, 300, seed=2, tie_rate=0.3)
    board = build_leaderboard(models_a, models_b, outcomes, bootstrap=0)
    order = np.random.default_rng(0).permutation(len(models_a))
    swapped = outcomes[order][:, [1, 0, 2]]  # B's view: A's wins become B's
    mirrored = build_leaderboard(
        [models_b[index] for index in order], [models_a[index] for index in order], swapped, bootstrap=0
    )
    assert mirrored.models == board.models
    np.testing.assert_allclose(mirrored.ratings, board.ratings, atol=1e-4)


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed():
    models_a, models_b, outcomes = simulated_battles({"a": 1150, "b": 1050, "c": 950, "d": 850}, 600, seed=3)
    board = build_leaderboard(models_a, models_b, outcomes, bootstrap=200, seed=7)
    assert (board.ci_low < board.ratings).all() and (board.ratings < board.ci_high).all()
    assert ((board.ci_high - board.ci_low) < 200).all()
    again = build_leaderboard(models_a, models_b, outcomes, bootstrap=200, seed=7)
    np.testing.assert_array_equal(again.ci_low, board.ci_low)
    np.testing.assert_array_equal(again.ci_high, board.ci_high)
    other = build_leaderboard(models_a, models_b, outcomes, bootstrap=200, seed=8)
    assert not np.array_equal(other.ci_low, board.ci_low)
    np.testing.assert_array_equal(other.ratings, board.ratings)  # the estimate does not depend on the seed


def test_progress_is_reported_up_to_the_last_round():
    models_a, models_b, outcomes = simulated_battles({"a": 1100, "b": 900}, 50, seed=4)
    seen = []
    build_leaderboard(models_a, models_b, outcomes, bootstrap=250, on_progress=lambda done, total: seen.append(done))
    assert seen[-1] == 250 and seen == sorted(seen) and len(seen) <= 101


def test_rows_without_two_named_models_are_skipped_and_counted():
    board = build_leaderboard(
        ["a", "a", "", "b", "c", "solo"],
        ["b", "b", "a", "", "a", "solo"],
        np.array([A_WINS, B_WINS, A_WINS, A_WINS, TIE, A_WINS]),
        bootstrap=0,
    )
    assert sorted(board.models) == ["a", "b", "c"]
    assert board.skipped_rows == {"no model name": 2, "same model on both sides": 1}
    assert board.total_battles == 3
    notes = " ".join(board.notes)
    assert "3 row(s) skipped" in notes
    assert "'solo'" in notes and "no battle against another named model" in notes


def test_models_that_never_met_are_flagged():
    board = build_leaderboard(["a", "c"], ["b", "d"], np.array([A_WINS, TIE]), bootstrap=0)
    assert any("2 groups that never met" in note for note in board.notes)


@pytest.mark.parametrize(
    ("models_a", "models_b", "outcomes", "options", "message"),
    [
        (["", "y"], ["x", ""], [A_WINS, B_WINS], {}, "no battles"),
        (["x", "x"], ["x", "x"], [A_WINS, TIE], {}, "only one model is named ('x')"),
        (["x"], ["y", "z"], [A_WINS], {}, "1 model_a names but 2 model_b names"),
        (["x", "y"], ["y", "x"], [A_WINS], {}, "shape"),
        (["x", "y"], ["y", "x"], [A_WINS, [0.5, 0.6, 0.1]], {}, "row 2"),
        (["x", "y"], ["y", "x"], [A_WINS, [math.nan, 0.5, 0.5]], {}, "finite, non-negative and sum to 1"),
        (["x", "y"], ["y", "x"], [A_WINS, B_WINS], {"bootstrap": -1}, "between 0 and 10,000"),
        (["x", "y"], ["y", "x"], [A_WINS, B_WINS], {"bootstrap": 10_001}, "between 0 and 10,000"),
    ],
)
def test_what_cannot_make_a_leaderboard_says_why(models_a, models_b, outcomes, options, message):
    with pytest.raises(LeaderboardError) as error:
        build_leaderboard(models_a, models_b, np.array(outcomes), **options)
    assert message in str(error.value)


def test_agreement_of_two_boards():
    models_a, models_b, outcomes = simulated_battles({"a": 1200, "b": 1100, "c": 1000, "d": 900}, 800, seed=5)
    human = build_leaderboard(models_a, models_b, outcomes, bootstrap=0)
    same = compare_leaderboards(human, human)
    assert same["spearman"] == 1.0 and same["kendall"] == 1.0 and same["mean_abs_rating_difference"] == 0.0
    assert same["same_top_model"] and same["models"] == 4
    reversed_board = build_leaderboard(models_a, models_b, outcomes[:, [1, 0, 2]], bootstrap=0)
    opposite = compare_leaderboards(human, reversed_board)
    assert opposite["spearman"] == -1.0 and opposite["kendall"] == -1.0 and not opposite["same_top_model"]
    # Reversed outcomes mirror every rating around 1000.
    expected = np.mean(np.abs(2 * (human.ratings - 1000)))
    assert opposite["mean_abs_rating_difference"] == pytest.approx(expected, abs=0.01)


def test_the_files_hold_the_board_best_first(tmp_path):
    models_a, models_b, outcomes = simulated_battles({"a": 1200, "b": 1000, "c": 800}, 300, seed=6)
    board = build_leaderboard(models_a, models_b, outcomes, bootstrap=30)
    names = write_leaderboard_files(board, tmp_path, prefix="human_", agreement={"spearman": 1.0})
    assert names == [
        "human_leaderboard.csv",
        "human_leaderboard_winrates.csv",
        "human_leaderboard.png",
        "human_leaderboard.json",
    ]
    with open(tmp_path / "human_leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == BOARD_COLUMNS
    assert [row["model"] for row in rows] == ["a", "b", "c"]
    assert float(rows[0]["ci_low"]) < float(rows[0]["rating"]) < float(rows[0]["ci_high"])
    assert sum(int(row["battles"]) for row in rows) == 600
    with open(tmp_path / "human_leaderboard_winrates.csv", newline="") as handle:
        matrix = list(csv.reader(handle))
    assert matrix[0] == ["model", "a", "b", "c"] and matrix[1][1] == "" and float(matrix[1][3]) > 0.8
    assert (tmp_path / "human_leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "human_leaderboard.json").read_text())
    assert summary["ratings"][0]["model"] == "a" and summary["bootstrap"] == 30
    assert summary["agreement_with_human"] == {"spearman": 1.0}


ARENA_HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b"]
LABEL_HEADER = ["winner_model_a", "winner_model_b", "winner_tie"]


def write_arena_csv(path, models_a, models_b, outcomes=None, *, with_models=True):
    header = [column for column in ARENA_HEADER if with_models or not column.startswith("model_")]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header + (LABEL_HEADER if outcomes is not None else []))
        for index, (model_a, model_b) in enumerate(zip(models_a, models_b, strict=True)):
            row = [str(index)] + ([model_a, model_b] if with_models else []) + ['["q"]', '["a"]', '["b"]']
            writer.writerow(row + ([int(value) for value in outcomes[index]] if outcomes is not None else []))
    return path


def test_the_csv_reader_carries_model_names(tmp_path):
    dataset = read_arena_csv(write_arena_csv(tmp_path / "named.csv", [" a ", ""], ["b", "c"]))
    assert dataset.models_a == ["a", ""] and dataset.models_b == ["b", "c"]
    assert dataset.head(1).models_a == ["a"]
    unnamed = read_arena_csv(write_arena_csv(tmp_path / "unnamed.csv", ["a"], ["b"], with_models=False))
    assert unnamed.models_a is None
    with pytest.raises(LeaderboardError, match="no model_a / model_b columns"):
        dataset_models(unnamed, name="unnamed.csv")


def test_a_submission_must_predict_exactly_the_input_rows(tmp_path):
    path = tmp_path / "submission.csv"
    write_submission(path, ["0", "1", "2"], np.tile([0.5, 0.3, 0.2], (3, 1)))
    assert read_submission(path, expected_ids=["0", "1", "2"], exact=True).shape == (3, 3)
    assert read_submission(path, expected_ids=["0", "1"]).shape == (2, 3)  # without `exact`, extra rows are allowed
    with pytest.raises(DataFormatError, match=r"1 id\(s\) are not in the input file, e.g. '2';"):
        read_submission(path, expected_ids=["0", "1"], exact=True)
    path.write_text(path.read_text() + "1,0.2,0.3,0.5\n")
    with pytest.raises(DataFormatError, match="more than one row"):
        read_submission(path, expected_ids=["0", "1", "2"])


def test_a_labelled_file_with_predictions_writes_both_boards_and_their_agreement(tmp_path):
    models_a, models_b, outcomes = simulated_battles({"a": 1200, "b": 1000, "c": 800}, 200, seed=7, tie_rate=0.2)
    dataset = read_arena_csv(write_arena_csv(tmp_path / "labelled.csv", models_a, models_b, outcomes))
    # A predictor that hedges towards a third each way, keeping the order.
    predictions = 0.5 * outcomes + 0.5 / 3
    seen = []
    summary = write_dataset_leaderboards(
        dataset,
        tmp_path / "out",
        predictions=predictions,
        bootstrap=20,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert summary["files"] == [
        "leaderboard.csv",
        "leaderboard_winrates.csv",
        "leaderboard.png",
        "leaderboard.json",
        "human_leaderboard.csv",
        "human_leaderboard_winrates.csv",
        "human_leaderboard.png",
        "human_leaderboard.json",
    ]
    assert all((tmp_path / "out" / name).is_file() for name in summary["files"])
    assert summary["leaderboard"]["outcome"] == "predictions" and summary["human_leaderboard"]["outcome"] == "labels"
    agreement = summary["agreement"]
    assert agreement["spearman"] == 1.0 and agreement["kendall"] == 1.0
    # Hedged predictions give the same order, flatter: the human spread is larger.
    assert agreement["mean_abs_rating_difference"] > 10
    assert json.loads((tmp_path / "out" / "leaderboard.json").read_text())["agreement_with_human"] == agreement
    assert seen[-1] == (40, 40)

    labels_only = write_dataset_leaderboards(dataset, tmp_path / "labels", bootstrap=0)
    assert labels_only["files"][0] == "leaderboard.csv" and "agreement" not in labels_only
    test_file = read_arena_csv(write_arena_csv(tmp_path / "test.csv", models_a, models_b))
    with pytest.raises(LeaderboardError, match="no labels"):
        write_dataset_leaderboards(test_file, tmp_path / "none", bootstrap=0)


def test_the_pandalm_rows_of_the_shared_data(data_csv, tmp_path):
    """The only rows of ../shared/data that name their models: 675 PandaLM battles between five 7B models."""
    dataset = read_arena_csv(data_csv)
    summary = write_dataset_leaderboards(dataset, tmp_path, bootstrap=50)
    board = summary["leaderboard"]
    assert board["models"] == 5 and board["battles"] == 675
    assert board["skipped_rows"]["no model name"] == len(dataset) - 675
    ratings = board["ratings"]
    assert ratings[0]["model"] == "llama-7b" and ratings[-1]["model"] == "cerebras-gpt-6.7B"
    assert all(row["ci_low"] < row["rating"] < row["ci_high"] for row in ratings)
