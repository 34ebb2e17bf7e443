"""Style features of the text model, on hand-made responses (no encoder needed)."""

from shared.arena_csv import Pair
from workers.predictor.text_model import style_features


def test_style_features_read_lists_code_repetition_and_refusals():
    listed = ("Steps:\n- mix the flour\n- add water\n1. bake\n```python\nprint(1)\n```",)
    refusal = ("Sorry, I cannot help with that. " * 5,)
    pair = Pair(id="1", prompt=("How do I bake bread?",), response_a=listed, response_b=refusal)
    features, names = style_features([pair, pair.swapped()])
    row = dict(zip(names, features[0], strict=True))
    assert (row["bullets_a"], row["numbered_items_a"], row["code_fences_a"]) == (2, 1, 2)
    assert row["refusal_words_in_opening_b"] > 0 and row["refusal_words_in_opening_a"] == 0
    assert row["compression_ratio_b"] < row["compression_ratio_a"]  # the refusal repeats itself
    mirrored = dict(zip(names, features[1], strict=True))
    assert mirrored["bullets_b"] == 2 and mirrored["bullets_diff"] == -row["bullets_diff"]


def test_similarity_features_are_the_same_in_both_orders_and_flag_alike_responses():
    """The tie signal: how alike A and B are must not depend on which one comes first."""
    first = ("The answer is 42.\nIt follows from the premise.",)
    second = ("Sorry, I can't help with that; the answer might be 41 or 42.",)
    pair = Pair(id="1", prompt=("What is six times seven?",), response_a=first, response_b=second)
    same = Pair(id="2", prompt=("What is six times seven?",), response_a=first, response_b=first)
    features, names = style_features([pair, pair.swapped(), same])
    similarity = [index for index, name in enumerate(names) if name.startswith("sim_")]
    assert len(similarity) == 17
    assert features[0, similarity].tolist() == features[1, similarity].tolist()
    rows = [dict(zip(names, row, strict=True)) for row in features]
    assert rows[2]["sim_identical"] == 1 and rows[0]["sim_identical"] == 0
    assert rows[0]["sim_one_refusal"] == 1 and rows[2]["sim_word_jaccard"] > rows[0]["sim_word_jaccard"]


def test_mirrored_style_is_exactly_the_style_of_the_swapped_pairs(data_csv):
    """The text model reads the mirror's style from the pair's own (one style pass, not two): it must be exact."""
    import numpy as np

    from shared.arena_csv import read_arena_csv
    from workers.predictor.text_model import mirrored_style

    pairs = read_arena_csv(data_csv).pairs[::25]
    style, _ = style_features(pairs)
    swapped, _ = style_features([pair.swapped() for pair in pairs])
    np.testing.assert_array_equal(mirrored_style(style), swapped)
