"""Synth bookkeeping without a model: duplicate detection in either order, and annotations of swapped rows."""

from shared.arena_csv import Pair
from workers.synth.labelling import _oriented, distinct_pairs, pair_key


def _pair(pair_id: str, prompt: str, a: str, b: str) -> Pair:
    return Pair(id=pair_id, prompt=(prompt,), response_a=(a,), response_b=(b,))


def test_duplicates_in_either_order_share_one_distinct_pair():
    pairs = [
        _pair("1", "q", "x", "y"),
        _pair("2", "q", "y", "x"),  # the same responses, swapped
        _pair("3", "q", "x", "y"),  # an exact repeat
        _pair("4", "q", "x", "z"),
        _pair("5", "other", "x", "y"),  # another prompt
    ]
    distinct = distinct_pairs(pairs)
    assert [pair.id for pair in distinct.pairs] == ["1", "4", "5"]
    assert distinct.row_to_distinct.tolist() == [0, 0, 0, 1, 2]
    assert distinct.row_swapped.tolist() == [False, True, False, False, False]
    assert pair_key(pairs[0])[0] == pair_key(pairs[1])[0] != pair_key(pairs[3])[0]
    # Turn boundaries matter: ("ab",) is not ("a", "b").
    split = Pair(id="6", prompt=("q",), response_a=("x", "y"), response_b=("z",))
    joined = Pair(id="7", prompt=("q",), response_a=("xy",), response_b=("z",))
    assert pair_key(split)[0] != pair_key(joined)[0]


def test_a_swapped_duplicate_reads_its_annotation_the_other_way_round():
    criterion = {
        "vote": "A",
        "probability": 0.7,
        "probabilities": {"A": 0.7, "B": 0.2, "AB": 0.05, "NA": 0.05},
        "by_order": [{"A": 0.8, "B": 0.1, "AB": 0.05, "NA": 0.05}, {"A": 0.6, "B": 0.3, "AB": 0.05, "NA": 0.05}],
        "rationale": "A explains it.",
        "rationale_vote": "AB",
    }
    record = {"key": "k", "id": "1", "label": {"A": 0.6, "B": 0.3, "tie": 0.1}, "criteria": {"clarity": criterion}}
    assert _oriented(record, False) is record
    swapped = _oriented(record, True)
    assert swapped["label"] == {"A": 0.3, "B": 0.6, "tie": 0.1}
    clarity = swapped["criteria"]["clarity"]
    assert clarity["vote"] == "B" and clarity["rationale_vote"] == "AB"
    assert clarity["probabilities"] == {"A": 0.2, "B": 0.7, "AB": 0.05, "NA": 0.05}
    assert clarity["by_order"][0] == {"A": 0.3, "B": 0.6, "AB": 0.05, "NA": 0.05}
    assert clarity["rationale_refers_to_swapped_order"] is True
    assert record["criteria"]["clarity"]["vote"] == "A", "the stored record is not changed"
