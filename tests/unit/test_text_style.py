"""Style features of the text model, on hand-made responses (no encoder needed)."""

from shared.arena_csv import Pair
from workers.stacking.text_model import style_features


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
