"""Per-row metadata is bounded: names capped at upload, per-source figures and leaderboards in O(rows) with codes,
many sources folded into "other", figure text never read as TeX, and a report that cannot be made never fails a
predict job (assembly checks cancel and its own time limit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.arena_csv import DataFormatError, check_arena_csv
from shared.job_store import JobStore
from shared.storage import dataset_csv_path, job_output_dir
from tests.api.arena_rows import arena_csv
from tests.unit.test_job_artifacts import DATASET_ID, job_with_finished_chunks
from tests.unit.test_job_artifacts import settings as settings  # noqa: F401 (a fixture)
from workers.common.groups import top_groups
from workers.jobs import predict as jobs
from workers.reports.evaluate import plot_reliability, score_predictions
from workers.reports.leaderboard import build_leaderboard, plot_leaderboard, write_leaderboard_files
from workers.training.model import score_logits

TEX_NAMES = ["$$", "$\\notacommand$", "$x^$", "a$b$c", "\\", "$\\frac{1}{0$", "100$ and 200$", "$_$"]


def _labels_and_probabilities(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.eye(3)[rng.integers(0, 3, rows)]
    probabilities = rng.dirichlet(np.ones(3), rows)
    return labels, probabilities


def test_per_source_figures_match_a_mask_per_source():
    labels, probabilities = _labels_and_probabilities(600)
    sources = [f"s{index % 7}" for index in range(600)]
    per_source = score_predictions(labels, probabilities, sources)["per_source"]
    array = np.array(sources)
    for source in set(sources):
        rows = array == source
        expected = score_predictions(labels[rows], probabilities[rows])
        assert per_source[source]["rows"] == rows.sum()
        assert per_source[source]["log_loss"] == pytest.approx(expected["log_loss"])
        assert per_source[source]["accuracy"] == pytest.approx(expected["accuracy"])
    assert list(per_source) == sorted(per_source, key=lambda source: (-per_source[source]["rows"], source))


def test_sources_past_the_cap_are_folded_into_other_with_a_note():
    """60,000 rows, each its own source (the outside battery's case), plus two large sources."""
    rows = 60_000
    labels, probabilities = _labels_and_probabilities(rows)
    sources = [f"row-{index}" for index in range(rows)]
    sources[:5000] = ["big"] * 5000
    sources[5000:8000] = ["medium"] * 3000
    metrics = score_predictions(labels, probabilities, sources, max_sources=5)
    per_source = metrics["per_source"]
    assert list(per_source)[:2] == ["big", "medium"] and len(per_source) == 6
    other = list(per_source)[-1]
    assert other == "(other 51,997 sources)" and per_source[other]["rows"] == rows - 8000 - 3
    assert sum(figures["rows"] for figures in per_source.values()) == rows
    assert "52,002 distinct sources, over the cap of 5" in metrics["per_source_note"]
    assert score_predictions(labels, probabilities)["log_loss"] == pytest.approx(
        sum(figures["log_loss"] * figures["rows"] for figures in per_source.values()) / rows
    )


def test_a_source_named_like_the_folded_group_stays_apart():
    groups = top_groups(["(other 1 sources)"] * 3 + ["a", "b"], max_groups=1)
    assert groups.names == ["(other 1 sources)", "(other 2 sources)"]
    groups = top_groups(["(other 2 sources)"] * 3 + ["a", "b"], max_groups=1)
    assert groups.names[0] != groups.names[1] and groups.counts.tolist() == [3, 2]


def test_training_per_source_loss_uses_codes():
    labels, probabilities = _labels_and_probabilities(300)
    logits = np.log(np.stack([probabilities, probabilities], axis=1))
    sources = ["b", "a", "c"] * 100
    figures = score_logits(logits, labels, sources)
    assert list(figures["per_source_log_loss"]) == ["a", "b", "c"]
    array = np.array(sources)
    expected = score_predictions(labels[array == "a"], probabilities[array == "a"])["log_loss"]
    assert figures["per_source_log_loss"]["a"] == pytest.approx(expected)


def test_a_leaderboard_with_a_900_kb_model_name_keeps_the_name_and_stays_small(tmp_path):
    """Fixed-width numpy strings made 4,000 names × 900 KB × 4 bytes (14 GB); codes hold each name once."""
    long_name = "m" * 900_000
    models = [long_name, "small-1", "small-2"]
    rows = 2000
    models_a = [models[index % 3] for index in range(rows)]
    models_b = [models[(index + 1) % 3] for index in range(rows)]
    labels, _ = _labels_and_probabilities(rows)
    board = build_leaderboard(models_a, models_b, labels, bootstrap=5)
    assert sorted(board.models) == sorted(models) and board.total_battles == rows
    files = write_leaderboard_files(board, tmp_path)
    assert long_name in (tmp_path / files[0]).read_text()  # the CSV keeps the whole name; the figure cuts it
    assert (tmp_path / "leaderboard.png").stat().st_size < 200_000


@pytest.mark.parametrize("name", TEX_NAMES)
def test_model_names_and_titles_are_never_parsed_as_tex(tmp_path, name):
    rows = 30
    models = [name, "plain", f"{name}-2"]
    labels, _ = _labels_and_probabilities(rows)
    board = build_leaderboard(
        [models[index % 3] for index in range(rows)], [models[(index + 1) % 3] for index in range(rows)], labels,
        bootstrap=0,
    )  # fmt: skip
    assert name in board.models
    plot_leaderboard(board, tmp_path / "board.png", title=name)
    plot_reliability(labels, np.full((rows, 3), 1 / 3), tmp_path / "reliability.png", title=name)
    assert (tmp_path / "board.png").stat().st_size > 0 and (tmp_path / "reliability.png").stat().st_size > 0


def test_names_over_the_cap_are_refused_at_upload_naming_row_and_column(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(arena_csv(3, models=("a", "b" * 201, "c")))
    check_arena_csv(path, max_name_chars=201)
    with pytest.raises(DataFormatError) as error:
        check_arena_csv(path, max_name_chars=200)
    message = str(error.value)
    assert "row 1 (id='1000'), column 'model_b': 201 characters" in message and "MAX_NAME_CHARS" in message
    assert "bbbbbbbbbb" not in message  # names the cell, never echoes it
    sourced = tmp_path / "sourced.csv"
    sourced.write_text("id,prompt,response_a,response_b,source\n1,[],[],[],ok\n2,[],[],[]," + "s" * 300 + "\n")
    with pytest.raises(DataFormatError, match="row 2 \\(id='2'\\), column 'source': 300 characters"):
        check_arena_csv(sourced, max_name_chars=200)


def _dataset_with(settings, *, models) -> None:
    dataset_csv_path(settings.SHARED_DIR, DATASET_ID).write_bytes(arena_csv(4, models=models))


def test_odd_model_names_never_fail_the_job(settings):  # noqa: F811
    _dataset_with(settings, models=("$$", "$\\notacommand$", "=HYPERLINK(1)"))
    settings.LEADERBOARD_BOOTSTRAP = 10
    store = job_with_finished_chunks(settings, "a" * 32)
    jobs.assemble_predict_job(settings, job_id="a" * 32)
    record = store.read("a" * 32)
    assert record.state == "succeeded", record.error
    assert "leaderboard.png" in record.artifacts and "reports_skipped" not in record.result


def test_a_report_that_cannot_be_made_is_skipped_with_the_reason_and_the_job_succeeds(settings, monkeypatch):  # noqa: F811
    _dataset_with(settings, models=("x", "y", "z"))
    settings.LEADERBOARD_BOOTSTRAP = 10
    from workers.reports import evaluate, leaderboard

    def broken(*args, **kwargs):
        raise ValueError("the figure could not be drawn")

    monkeypatch.setattr(evaluate, "plot_reliability", broken)
    monkeypatch.setattr(leaderboard, "plot_leaderboard", broken)
    store = job_with_finished_chunks(settings, "b" * 32)
    jobs.assemble_predict_job(settings, job_id="b" * 32)
    record = store.read("b" * 32)
    assert record.state == "succeeded", record.error
    assert record.artifacts == ["submission.csv", "votes.npz", "metrics.json"]
    assert record.result["reports_skipped"] == {"reliability_diagram": "'ValueError: the figure could not be drawn'"}
    assert "could not be drawn" in record.result["leaderboard"]["skipped"]
    assert "log_loss" in record.result  # the figures that could be made are there
    metrics = json.loads((job_output_dir(settings.SHARED_DIR, "b" * 32) / "metrics.json").read_text())
    assert metrics["reports_skipped"] == record.result["reports_skipped"]


def test_reports_past_the_assembly_time_limit_are_skipped(settings, monkeypatch):  # noqa: F811
    _dataset_with(settings, models=("x", "y", "z"))
    settings.LEADERBOARD_BOOTSTRAP = 200
    clock = iter(range(0, 10_000, 7))  # each reading 7 s later: the limit passes during the bootstrap
    monkeypatch.setattr(jobs.time, "monotonic", lambda: float(next(clock)))
    store = job_with_finished_chunks(settings, "c" * 32)
    settings.ASSEMBLY_TIME_LIMIT_S = 30
    jobs.assemble_predict_job(settings, job_id="c" * 32)
    record = store.read("c" * 32)
    assert record.state == "succeeded", record.error
    assert "ASSEMBLY_TIME_LIMIT_S (30s)" in record.result["leaderboard"]["skipped"]
    assert (job_output_dir(settings.SHARED_DIR, "c" * 32) / "submission.csv").is_file()


def test_a_cancel_during_the_leaderboard_stops_the_assembly(settings, monkeypatch):  # noqa: F811
    _dataset_with(settings, models=("x", "y", "z"))
    settings.LEADERBOARD_BOOTSTRAP = 500
    job_with_finished_chunks(settings, "e" * 32)
    from workers.reports import leaderboard

    fit = leaderboard._RatingFit.ratings
    calls = {"n": 0}

    def cancelled_midway(self, *args):
        calls["n"] += 1
        if calls["n"] == 50:
            JobStore(settings.SHARED_DIR).cancel("e" * 32)  # the user's cancel lands mid-bootstrap
        return fit(self, *args)

    monkeypatch.setattr(leaderboard._RatingFit, "ratings", cancelled_midway)
    checks = iter(range(0, 100_000, 2))  # 2 s between readings: the guard reads the record at each report
    monkeypatch.setattr(jobs.time, "monotonic", lambda: float(next(checks)))
    assert jobs.assemble_predict_job(settings, job_id="e" * 32)["state"] == "cancelled"
    assert calls["n"] < 500  # stopped within the next progress report, not after every round
    files = {path.name for path in job_output_dir(settings.SHARED_DIR, "e" * 32).iterdir()}
    assert files == {"chunks"}
