"""The domain check on real rows and the real MiniLM encoder: a text predictor fitted on two sources says that new
prompts of those sources are like its training data, and that a source it never saw and code snippets are not."""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.arena_csv import read_arena_csv, read_submission
from shared.artifacts import DOMAIN_REFERENCE_NAME
from workers.predictor.domain import DomainReference, domain_check
from workers.predictor.predictor import Predictor, PredictRequest
from workers.training.text_predictor import fit_text_predictor, text_predictor_is_current

pytestmark = pytest.mark.model
REPO_ROOT = Path(__file__).resolve().parents[2]

TRAINING_SOURCES = ["llmeval2", "autoj_pairwise_test"]
CODE_SNIPPETS = [
    "def f(x):\n    return [i * i for i in range(x) if i % 3]\n\nprint(f(10))",
    "SELECT user_id, COUNT(*) FROM orders o JOIN users u ON u.id = o.user_id GROUP BY user_id HAVING COUNT(*) > 5;",
    '#include <stdio.h>\nint main(void) { int a[4] = {1, 2, 3, 4}; printf("%d\\n", a[2]); return 0; }',
    "const xs = await fetch(url).then(r => r.json()); xs.filter(x => x.ok).map(x => x.id).forEach(console.log);",
    "for i in $(seq 1 10); do grep -c ERROR /var/log/app.$i.log >> counts.txt; done && sort -n counts.txt | tail -1",
    "impl Iterator for Counter { type Item = u32; fn next(&mut self) -> Option<u32> { self.n += 1; Some(self.n) } }",
]


@pytest.fixture(scope="module")
def fitted(data_csv, tmp_path_factory, model_settings):
    """A predictor fitted on 500 rows of two sources; held-out prompts of those sources and two unlike sets."""
    folder = tmp_path_factory.mktemp("domain-check")
    frame = pd.read_csv(data_csv, dtype=str, keep_default_na=False)
    two = frame[frame["source"].isin(TRAINING_SOURCES)].sample(500, random_state=0)
    held_out = two["prompt"].map(lambda prompt: zlib.crc32(prompt.encode()) % 4 == 0)
    two[~held_out].to_csv(folder / "train.csv", index=False)
    two[held_out].to_csv(folder / "like.csv", index=False)
    frame[frame["source"] == "hhh_alignment"].head(120).to_csv(folder / "left_out.csv", index=False)
    code = frame.head(len(CODE_SNIPPETS)).copy()
    code["prompt"] = [json.dumps([snippet]) for snippet in CODE_SNIPPETS]
    code.to_csv(folder / "code.csv", index=False)
    metrics = fit_text_predictor(
        inputs=[folder / "train.csv"], output_dir=folder / "predictor", text_encoder=model_settings.text_encoder_path
    )
    return folder, metrics


def test_arena_predict_acts_on_an_unlike_set_as_a_predict_job_does(fitted, model_settings):
    """Runs before the test below, which removes the reference file. 120 left-out rows: the floor is lowered to 100.
    An unlike set is answered by the transfer model, or shrunk toward the prior with DOMAIN_TRANSFER_MODEL off; a
    like set is left as judged."""
    folder, metrics = fitted
    predictor_dir, prior = folder / "predictor", np.array(metrics["domain_reference"]["class_prior"])
    assert prior.sum() == pytest.approx(1.0, abs=1e-5)
    predictor = Predictor.open(model_settings, PredictRequest.from_cli(model_settings, adapter=predictor_dir))
    for name, transfer_model, action in (("left_out", "true", "transfer"), ("left_out", "false", "shrink"),
                                         ("like", "true", None)):  # fmt: skip
        dataset = read_arena_csv(folder / f"{name}.csv")
        prediction = predictor.predict(dataset)
        judged, transfer = prediction.probabilities, np.exp(prediction.judge_result.transfer_logprobs)
        run = subprocess.run(
            [str(REPO_ROOT / "scripts" / "arena"), "predict", "--input", str(folder / f"{name}.csv"), "--output",
             str(folder / f"{name}-submission.csv"), "--adapter", str(predictor_dir)],
            capture_output=True, text=True, timeout=600,
            env=dict(os.environ, DOMAIN_SHRINK_MIN_ROWS="100", DOMAIN_TRANSFER_MODEL=transfer_model,
                     ARENA_WORKER_PYTHON=sys.executable),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        check = json.loads(run.stdout)["domain_check"]
        written = read_submission(folder / f"{name}-submission.csv", expected_ids=dataset.ids)
        assert ("shrink" in check) is (action == "shrink"), (name, check)
        assert (check.get("answered_by") == "transfer model") is (action == "transfer"), (name, check)
        expected = {"shrink": 0.5 * judged + 0.5 * prior / prior.sum(), "transfer": transfer, None: judged}[action]
        np.testing.assert_allclose(written, expected, atol=2e-3)
    # The transfer model is its own answer, not the text model's output in another guise.
    assert np.abs(transfer - judged).max() > 0.05


def test_prompts_of_the_training_sources_pass_and_unlike_ones_raise_the_alarm(fitted, model_settings):
    folder, metrics = fitted
    predictor_dir = folder / "predictor"
    reference = DomainReference.load(predictor_dir / DOMAIN_REFERENCE_NAME)
    figures = metrics["domain_reference"]
    assert reference.figures == figures and reference.prompts.dtype == np.float16
    assert figures["reference_prompts"] == len(reference.prompts) <= metrics["rows"]
    assert len(figures["in_domain_statistics"]) == 5
    assert figures["expected_log_loss_in_domain"] == pytest.approx(metrics["calibrator_cv_log_loss"], abs=1e-4)
    assert text_predictor_is_current(predictor_dir, inputs=[folder / "train.csv"])

    predictor = Predictor.open(model_settings, PredictRequest.from_cli(model_settings, adapter=predictor_dir))
    assert predictor.description["domain_reference"] == figures
    checks = {}
    for name in ("like", "left_out", "code"):
        result = predictor.predict(read_arena_csv(folder / f"{name}.csv")).judge_result
        assert result.prompt_nearest_cosine.shape == (len(result.ids),)
        checks[name] = domain_check(result.prompt_nearest_cosine, figures, setting=model_settings.DOMAIN_ALARM_COSINE)
    assert checks["like"]["like_training"] is True, checks["like"]
    assert checks["like"]["expected_log_loss"] == figures["expected_log_loss_in_domain"]
    for name in ("left_out", "code"):
        assert checks[name]["like_training"] is False, (name, checks[name])
        assert checks[name]["expected_log_loss"] == 1.06
    assert checks["code"]["statistic"] < checks["left_out"]["statistic"] < checks["like"]["statistic"]

    # A predictor folder from before the check: no reference, no values, and set-up refits it.
    (predictor_dir / DOMAIN_REFERENCE_NAME).unlink()
    assert not text_predictor_is_current(predictor_dir, inputs=[folder / "train.csv"])
    older = Predictor.open(model_settings, PredictRequest.from_cli(model_settings, adapter=predictor_dir))
    assert older.description["domain_reference"] is None
    assert older.predict(read_arena_csv(folder / "code.csv")).judge_result.prompt_nearest_cosine is None
