import json

import numpy as np
import pytest

from shared.arena_csv import (
    DataFormatError,
    clean_text,
    read_arena_csv,
    read_submission,
    write_submission,
)

HEADER = "id,prompt,response_a,response_b"


def write(tmp_path, text, name="in.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_real_data_with_labels_and_sources(data_csv):
    dataset = read_arena_csv(data_csv)
    assert len(dataset) == 3667
    assert dataset.labels.shape == (3667, 3)
    np.testing.assert_allclose(dataset.labels.sum(axis=1), 1.0)
    assert len(set(dataset.sources)) == 5
    assert any(len(pair.prompt) > 1 for pair in dataset.pairs), "multi-turn rows exist in the real data"


def test_null_and_empty_turns_become_empty_strings(tmp_path):
    path = write(tmp_path, f'{HEADER}\n1,"[""hi"", null]","[""""]","[null]"\n')
    pair = read_arena_csv(path).pairs[0]
    assert pair.prompt == ("hi", "")
    assert pair.response_a == ("",)
    assert pair.response_b == ("",)


def test_lone_surrogates_are_repaired():
    broken = json.loads('"bad \\ud83d end"')
    repaired = clean_text(broken)
    repaired.encode("utf-8")
    assert repaired.startswith("bad ") and repaired.endswith(" end")
    assert clean_text(json.loads('"\\ud83d\\ude00"')) == "\U0001f600"


def test_surrogate_escape_in_csv_is_readable(tmp_path):
    path = write(tmp_path, f'{HEADER}\n1,"[""x \\ud83d y""]","[""a""]","[""b""]"\n')
    read_arena_csv(path).pairs[0].prompt[0].encode("utf-8")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty"),
        ("id,prompt,response_a\n1,[],[]\n", "missing column(s) ['response_b']"),
        (f"{HEADER}\n", "no rows"),
        (f'{HEADER}\n7,not json,"[""a""]","[""b""]"\n', "row 1 (id='7'), column 'prompt'"),
        (f'{HEADER}\n7,"[1]","[""a""]","[""b""]"\n', "turns must be strings"),
        (f'{HEADER}\n7,"{{}}","[""a""]","[""b""]"\n', "expected a JSON list"),
        (f'{HEADER}\n7,"[""p""]","[""a""]","[""b""]"\n7,"[""p""]","[""a""]","[""b""]"\n', "duplicate id"),
        (f'{HEADER}\n,"[""p""]","[""a""]","[""b""]"\n', "column 'id' is empty"),
        (f'{HEADER},winner_model_a\n1,"[""p""]","[""a""]","[""b""]",1\n', "label columns are incomplete"),
        (
            f'{HEADER},winner_model_a,winner_model_b,winner_tie\n1,"[""p""]","[""a""]","[""b""]",1,1,0\n',
            "sum to 1",
        ),
        (
            f'{HEADER},winner_model_a,winner_model_b,winner_tie\n1,"[""p""]","[""a""]","[""b""]",yes,0,0\n',
            "is not a number",
        ),
    ],
)
def test_malformed_input_names_the_problem(tmp_path, body, message):
    with pytest.raises(DataFormatError, match=None) as error:
        read_arena_csv(write(tmp_path, body))
    assert message in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        read_arena_csv(tmp_path / "absent.csv")


def test_labels_required_when_asked(tmp_path):
    with pytest.raises(DataFormatError, match="needs labelled data"):
        read_arena_csv(write(tmp_path, f'{HEADER}\n1,"[""p""]","[""a""]","[""b""]"\n'), require_labels=True)


def test_submission_is_clipped_normalised_in_order(tmp_path):
    ids = ["b", "a", "c"]
    probabilities = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [np.nan, 1.0, 1.0]])
    path = write_submission(tmp_path / "sub.csv", ids, probabilities, floor=1e-3)
    lines = path.read_text().splitlines()
    assert lines[0] == "id,winner_model_a,winner_model_b,winner_tie"
    assert [line.split(",")[0] for line in lines[1:]] == ids
    values = read_submission(path)
    assert (values > 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(read_submission(path, expected_ids=["a"])[0], [0.2, 0.3, 0.5], atol=1e-5)


def test_failed_submission_write_keeps_the_previous_file(tmp_path):
    path = write_submission(tmp_path / "sub.csv", ["1"], np.array([[0.2, 0.3, 0.5]]))
    before = path.read_text()
    with pytest.raises(ValueError):
        write_submission(path, ["1", "2"], np.array([[0.2, 0.3, 0.5]]))
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"], "no temp file left behind"
