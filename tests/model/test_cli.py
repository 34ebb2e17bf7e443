"""`scripts/arena` end to end on real rows: predict (vLLM, prefix cache off), calibrate, evaluate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.arena_csv import read_arena_csv, read_submission

pytestmark = pytest.mark.model
REPO_ROOT = Path(__file__).resolve().parents[2]


def arena(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MAX_MODEL_LEN="1024", JUDGE_CHUNK_PAIRS="4", **(env_extra or {}))
    env["ARENA_WORKER_PYTHON"] = sys.executable
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "arena"), *args], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.fixture(scope="module")
def small_files(data_csv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    frame = pd.read_csv(data_csv, dtype=str, keep_default_na=False)
    multi_turn = frame[frame["prompt"].map(lambda cell: len(json.loads(cell)) > 1)].head(1)
    labelled = pd.concat([frame.iloc[[0, 700, 1500]], multi_turn])
    labelled.to_csv(folder / "labelled.csv", index=False)
    labelled.drop(columns=["winner_model_a", "winner_model_b", "winner_tie", "source"]).to_csv(
        folder / "test.csv", index=False
    )
    return folder


def test_predict_calibrate_evaluate(small_files, vllm_judge):
    submission = small_files / "submission.csv"
    votes = small_files / "votes.npz"
    run = arena(
        "predict",
        "--input",
        str(small_files / "test.csv"),
        "--output",
        str(submission),
        "--no-prefix-cache",
        "--raw",
        "--save-votes",
        str(votes),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["rows"] == 4 and summary["orders"] == 2 and not summary["calibrated"]
    assert summary["judge"]["prefix_caching"] is False
    test = read_arena_csv(small_files / "test.csv")
    probabilities = read_submission(submission, expected_ids=test.ids)
    assert submission.read_text().splitlines()[0] == "id,winner_model_a,winner_model_b,winner_tie"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Prefix caching changes speed, not answers (bf16 noise aside).
    cached = vllm_judge.judge(test.pairs).raw_probabilities
    assert np.abs(cached - probabilities).max() < 0.03

    calibration = small_files / "calibration.json"
    run = arena(
        "calibrate", "--input", str(small_files / "labelled.csv"), "--output", str(calibration), "--votes", str(votes)
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(calibration.read_text())["n_orders"] == 2

    calibrated = small_files / "calibrated.csv"
    run = arena(
        "predict",
        "--input",
        str(small_files / "test.csv"),
        "--output",
        str(calibrated),
        "--calibration",
        str(calibration),
        "--votes",
        str(votes),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["calibrated"] is True
    assert not np.allclose(read_submission(calibrated), probabilities, atol=1e-4)

    run = arena("evaluate", "--input", str(small_files / "labelled.csv"), "--predictions", str(calibrated))
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(run.stdout)
    assert metrics["rows"] == 4 and 0 < metrics["log_loss"] < 5
    assert Path(metrics["reliability_plot"]).read_bytes()[:4] == b"\x89PNG"
    assert "per_source" in metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "--input", "MISSING.csv", "--output", "x.csv"], "no such file"),
        (["predict", "--input", "{test}", "--output", "x.csv", "--model", "/nowhere", "--raw"], "make setup"),
        (["predict", "--input", "{test}", "--output", "x.csv", "--model", "/nowhere"], "--raw"),
        (["predict", "--input", "{test}", "--output", "x.csv", "--calibration", "/nowhere.json"], "not found"),
        (["calibrate", "--input", "{test}", "--output", "c.json"], "needs labelled data"),
        (["train", "--input", "{test}", "--output-dir", "{tmp}/adapter"], "needs labelled data"),
        (["train", "--input", "MISSING.csv", "--output-dir", "{tmp}/adapter"], "no such file"),
    ],
)
def test_user_errors_exit_2_without_traceback(small_files, args, message):
    run = arena(
        *[arg.replace("{test}", str(small_files / "test.csv")).replace("{tmp}", str(small_files)) for arg in args]
    )
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_a_plain_predict_writes_the_default_predictor_and_names_the_fix_without_it(small_files, tmp_path):
    """No --adapter, --calibration or --raw: the calibrated text predictor `make setup` fitted, never raw votes."""
    submission = small_files / "default.csv"
    run = arena("predict", "--input", str(small_files / "test.csv"), "--output", str(submission))
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["calibrated"] is True and summary["judge"]["kind"] == "text model"
    assert summary["calibration"].endswith("models/default/calibration.json")
    probabilities = read_submission(submission, expected_ids=read_arena_csv(small_files / "test.csv").ids)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    empty_shared = tmp_path / "shared"
    run = arena(
        "predict",
        "--input",
        str(small_files / "test.csv"),
        "--output",
        str(tmp_path / "x.csv"),
        env_extra={"SHARED_DIR": str(empty_shared)},
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "make setup" in run.stderr and "arena train --text-only" in run.stderr


def test_leaderboard_from_labels_and_a_submission(tmp_path):
    """`arena leaderboard` on a generated file: both boards, their agreement, and the errors a user can fix."""
    rng = np.random.default_rng(0)
    strength = {"alpha": 1.0, "beta": 0.5, "gamma": 0.0}
    rows = []
    for index in range(90):
        model_a, model_b = rng.choice(list(strength), size=2, replace=False)
        p_a = 1 / (1 + np.exp(strength[model_b] - strength[model_a]))
        winner = [1, 0, 0] if rng.uniform() < p_a else [0, 1, 0]
        rows.append([str(index), model_a, model_b, '["q"]', '["a"]', '["b"]', *winner])
    columns = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b"]
    labelled = pd.DataFrame(rows, columns=[*columns, "winner_tie"])
    labelled.to_csv(tmp_path / "battles.csv", index=False)
    labels = labelled[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy(dtype=float)
    hedged = pd.DataFrame(0.5 * labels + 0.5 / 3, columns=["winner_model_a", "winner_model_b", "winner_tie"])
    hedged.insert(0, "id", labelled["id"])
    hedged.to_csv(tmp_path / "submission.csv", index=False)

    output_dir = tmp_path / "board"
    run = arena(
        "leaderboard",
        "--input",
        str(tmp_path / "battles.csv"),
        "--predictions",
        str(tmp_path / "submission.csv"),
        "--output-dir",
        str(output_dir),
        "--bootstrap",
        "50",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["agreement"]["spearman"] == 1.0 and "Spearman 1.0" in run.stderr
    board = pd.read_csv(output_dir / "leaderboard.csv")
    assert board.columns.tolist() == ["model", "rating", "ci_low", "ci_high", "battles"]
    assert board["model"].tolist() == ["alpha", "beta", "gamma"] and board["battles"].sum() == 180
    human = pd.read_csv(output_dir / "human_leaderboard.csv")
    assert human["model"].tolist() == ["alpha", "beta", "gamma"]
    assert (human["rating"].max() - human["rating"].min()) > (board["rating"].max() - board["rating"].min())
    assert (output_dir / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert {"leaderboard_winrates.csv", "leaderboard.json", "human_leaderboard.png"} <= set(summary["files"])

    labelled.drop(columns=["model_a", "model_b"]).to_csv(tmp_path / "no_models.csv", index=False)
    labelled.assign(model_b="alpha", model_a="alpha").to_csv(tmp_path / "one_model.csv", index=False)
    hedged.assign(id="x" + hedged["id"]).to_csv(tmp_path / "other_ids.csv", index=False)
    pd.concat([hedged, hedged.head(1).assign(id="extra")]).to_csv(tmp_path / "extra_id.csv", index=False)
    for args, message in [
        (["--input", "no_models.csv"], "no model_a / model_b columns"),
        (["--input", "one_model.csv"], "only one model is named ('alpha')"),
        (["--input", "battles.csv", "--predictions", "other_ids.csv"], "have no prediction"),
        (["--input", "battles.csv", "--predictions", "extra_id.csv"], "1 id(s) are not in the input file"),
        (["--input", "battles.csv", "--bootstrap", "20000"], "between 0 and 10,000"),
    ]:
        run = arena(
            "leaderboard",
            *[str(tmp_path / arg) if arg.endswith(".csv") else arg for arg in args],
            "--output-dir",
            str(tmp_path / "failed"),
        )
        assert run.returncode == 2, (args, run.stderr[-2000:])
        assert message in run.stderr and "Traceback" not in run.stderr
