import pytest

from shared.arena_csv import Pair, read_arena_csv
from shared.settings import get_settings
from workers.judge.engines import ModelNotFoundError, load_tokenizer
from workers.judge.prompts import CRITERIA, VOTES, JudgePromptBuilder, keep_head_and_tail


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(get_settings().judge_model_path)


@pytest.fixture(scope="module")
def builder(tokenizer):
    return JudgePromptBuilder(tokenizer, max_model_len=1024)


def test_vote_tokens_are_single_distinct_tokens(builder, tokenizer):
    assert len(set(builder.vote_token_ids)) == len(VOTES)
    assert [tokenizer.decode([token]) for token in builder.vote_token_ids] == list(VOTES)


def test_conversation_comes_first_and_the_criterion_last(builder, tokenizer):
    pair = Pair("1", ("What is 2+2?",), ("4",), ("five",))
    prompts = builder.build(pair)
    assert not prompts.truncated
    first = tokenizer.decode(prompts.prefixes[0])
    assert first.index("What is 2+2?") < first.index("## Assistant A\n4") < first.index("## Assistant B\nfive")
    swapped = tokenizer.decode(prompts.prefixes[1])
    assert swapped.index("## Assistant A\nfive") < swapped.index("## Assistant B\n4")
    assert len(builder.suffix_ids) == len(CRITERIA)
    for criterion, suffix in zip(CRITERIA, builder.suffix_ids, strict=True):
        text = tokenizer.decode(suffix)
        assert criterion.question in text
        assert "What is 2+2?" not in text, "the question part must not repeat the shared conversation"


def test_multi_turn_conversations_keep_every_turn(builder, tokenizer):
    pair = Pair("1", ("first question", "second question"), ("a1", "a2"), ("b1", ""))
    text = tokenizer.decode(builder.build(pair).prefixes[0])
    for piece in ("first question", "second question", "a1", "a2", "b1", "turn 2 of 2", "(empty)"):
        assert piece in text


def test_long_turns_are_cut_in_the_middle_and_fit_the_budget(builder, tokenizer):
    long_answer = "Opening sentence of A. " + " ".join(f"filler{i}" for i in range(3000)) + " Closing line of A."
    pair = Pair("1", ("Tell me everything.",), (long_answer,), ("Short B answer.",))
    prompts = builder.build(pair)
    assert prompts.truncated
    for prefix in prompts.prefixes:
        assert len(prefix) + max(len(suffix) for suffix in builder.suffix_ids) <= builder.max_model_len
    text = tokenizer.decode(prompts.prefixes[0])
    for kept in ("Tell me everything.", "Opening sentence of A.", "Closing line of A.", "Short B answer."):
        assert kept in text
    assert "tokens omitted" in text


def test_many_long_turns_still_fit(builder):
    turns = tuple("word " * 800 for _ in range(6))
    prompts = builder.build(Pair("1", turns, turns, turns))
    assert prompts.truncated
    assert all(len(prefix) <= builder.prefix_budget for prefix in prompts.prefixes)


def test_keep_head_and_tail_marks_the_gap(tokenizer):
    text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 30 for i in range(40)) + "\n\nFinal words."
    shortened = keep_head_and_tail(text, tokenizer, max_tokens=200, n_tokens=len(tokenizer.encode(text)))
    assert shortened.startswith("Paragraph 0")
    assert shortened.endswith("Final words.")
    assert "tokens omitted" in shortened
    assert len(tokenizer.encode(shortened)) <= 220


def test_real_rows_fit_the_default_budget(data_csv, tokenizer):
    settings = get_settings()
    builder = JudgePromptBuilder(tokenizer, max_model_len=settings.MAX_MODEL_LEN)
    dataset = read_arena_csv(data_csv)
    longest = sorted(dataset.pairs, key=lambda pair: -sum(map(len, pair.response_a + pair.response_b + pair.prompt)))
    for pair in longest[:5]:
        prompts = builder.build(pair)
        assert prompts.truncated
        assert all(len(prefix) <= builder.prefix_budget for prefix in prompts.prefixes)


def test_unknown_model_folder_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="make setup"):
        load_tokenizer(tmp_path / "no-model")
