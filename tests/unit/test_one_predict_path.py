"""One predict path: `arena predict`, predict jobs and POST /v1/score all go through workers/predictor/predictor.py
(PredictRequest → Predictor), and no other module opens a judge or applies a calibrator on its own.

Two paths drift: the CLI once cast the votes a stacked calibrator reads and the jobs did not, and `raw` meant one
thing on the command line and another in a job. This guard keeps a second path from coming back.
"""

import ast

import pytest

from shared.settings import REPO_ROOT

PREDICT_MODULE = "workers/predictor/predictor.py"
# Measures the judge itself (engines, prefix caching), not a prediction: it opens a bare Judge on purpose.
ALLOWED = {PREDICT_MODULE, "scripts/bench/bench_judge.py"}
# The predictor module's internals: resolving the calibration, loading and checking the calibrator, opening or
# caching a judge, applying a calibrator to a judge's output.
INTERNALS = {
    "Judge",
    "open_text_predictor",
    "_cached_judge",
    "_CACHED_JUDGES",
    "_load_calibrator",
    "_judge_options",
    # the names of the paths this module replaced
    "cached_judge",
    "calibration_for",
    "load_calibrator",
    "calibrated_probabilities",
    "predict_dataset",
    "JudgeRequest",
}
# The callers, each of which must go through the Predictor.
CALLERS = ("workers/cli/predict.py", "workers/jobs/predict.py", "workers/jobs/score.py")


def internals_used(source: str):
    """(line, what) for each use of a predictor internal: a name, an attribute, an import, or `Calibrator.load`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in INTERNALS:
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            if node.attr in INTERNALS:
                yield node.lineno, node.attr
            elif node.attr == "load" and isinstance(node.value, ast.Name) and node.value.id == "Calibrator":
                yield node.lineno, "Calibrator.load"
        elif isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                if alias.name.rsplit(".", 1)[-1] in INTERNALS:
                    yield node.lineno, f"import {alias.name}"


def checked_modules() -> list:
    paths = sorted([*(REPO_ROOT / "workers").rglob("*.py"), *(REPO_ROOT / "scripts").rglob("*.py")])
    return [path for path in paths if path.relative_to(REPO_ROOT).as_posix() not in ALLOWED]


def test_no_module_but_the_predictor_opens_a_judge_or_applies_a_calibrator():
    paths = checked_modules()
    assert len(paths) > 20, "the guard found too few modules to check"
    offenders = sorted(
        {
            f"{path.relative_to(REPO_ROOT)}:{line} uses {what}"
            for path in paths
            for line, what in internals_used(path.read_text())
        }
    )
    assert not offenders, (
        f"predict through {PREDICT_MODULE} (PredictRequest.from_params / from_cli, then Predictor.open / cached /"
        " for_saved_votes, predict or apply), not around it:\n" + "\n".join(offenders)
    )


@pytest.mark.parametrize("caller", CALLERS)
def test_every_predict_caller_goes_through_the_predictor(caller):
    tree = ast.parse((REPO_ROOT / caller).read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert {"Predictor", "PredictRequest"} <= names | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }, f"{caller} no longer predicts through {PREDICT_MODULE}"


def test_the_guard_sees_lazy_imports_attributes_and_calibrator_loads():
    source = (
        "def f(settings, module):\n"
        "    from workers.predictor.predictor import Judge\n"
        "    module.calibrated_probabilities(1, 2, 3)\n"
        "    return Calibrator.load('c.json')\n"
    )
    found = {what for _, what in internals_used(source)}
    assert {"import Judge", "calibrated_probabilities", "Calibrator.load"} <= found
    assert not list(internals_used("from workers.judge.votes import JudgeResult\nJudgeResult(ids=[])\n"))
