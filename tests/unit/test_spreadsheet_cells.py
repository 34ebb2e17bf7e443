"""Downloads safe to open: every CSV the stack writes neutralises the cells a spreadsheet would run (OWASP)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from shared.arena_csv import read_submission, write_submission
from shared.spreadsheet import safe_cell
from workers.reports.leaderboard import build_leaderboard, write_leaderboard_files
from workers.training.splits import split_file

FORMULAS = ['=HYPERLINK("http://x.test","click")', "+1+1", "-2+3", "@SUM(1)", "\t=1", "\r=1", "=1", "-", "+"]
NUMBERS = ["-1.5", "+3", "-2e-3", "0", "-.5", "1e10"]
PLAIN = ["gpt-4", "model = x", "a+b", "", "'=already"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_formulas_get_a_leading_quote(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", NUMBERS + PLAIN)
def test_numbers_and_plain_text_are_left_alone(cell):
    assert safe_cell(cell) == cell


def test_non_strings_pass_unchanged():
    assert safe_cell(-1.5) == -1.5 and safe_cell(3) == 3 and safe_cell(None) is None


def _cells(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_leaderboard_files_hold_no_runnable_cell(tmp_path):
    models = ['=HYPERLINK("http://x.test")', "+1+1", "-2+3", "@SUM(1)", "-1.5", "plain"]
    rows = 120
    labels = np.eye(3)[np.random.default_rng(0).integers(0, 3, rows)]
    board = build_leaderboard(
        [models[index % 6] for index in range(rows)], [models[(index + 1) % 6] for index in range(rows)], labels,
        bootstrap=0,
    )  # fmt: skip
    names = write_leaderboard_files(board, tmp_path)
    for name in names[:2]:  # leaderboard.csv, leaderboard_winrates.csv
        cells = _cells(tmp_path / name)
        runnable = [cell for cell in cells if safe_cell(cell) != cell]
        assert runnable == [], (name, runnable)
        assert '\'=HYPERLINK("http://x.test")' in cells and "'+1+1" in cells and "'-2+3" in cells
        assert "-1.5" in cells  # a model named like a number stays as it is
    assert '=HYPERLINK("http://x.test")' in board.models  # the JSON and the API keep the names as given


def test_submission_ids_are_neutralised_and_still_match(tmp_path):
    ids = ["=1+1", "-7", "42"]
    path = write_submission(tmp_path / "submission.csv", ids, np.full((3, 3), 1 / 3))
    assert _cells(path)[4::4] == ["'=1+1", "-7", "42"]
    assert read_submission(path, expected_ids=ids, exact=True).shape == (3, 3)


def test_split_files_hold_no_runnable_cell(tmp_path):
    header = "id,model_a,model_b,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie"
    lines = [header] + [f'{index},=cmd|x,@SUM(1),"[""p{index}""]","[""a""]","[""b""]",1,0,0' for index in range(20)]
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n")
    split_file(source, tmp_path, holdout_fraction=0.5)
    for name in ("train.csv", "holdout.csv", "holdout_test.csv"):
        cells = _cells(tmp_path / name)
        assert all(safe_cell(cell) == cell for cell in cells), name
        assert "'=cmd|x" in cells
