"""Pathological cells through every text function a score or predict request reaches before the model (issue 20).

Runs of newlines, whitespace only or none at all, 10,000 empty turns, control and combining characters, deep
nesting, 1 MiB of one punctuation mark, random unicode: each call must end within CALL_SECONDS on a busy 2-core
machine. An alarm stops a call that runs past it, so a regression fails fast instead of hanging the suite (the
former style regexes, `^\\s*…` under MULTILINE, needed hours on 1 MiB of newlines: a 300 KB score request of empty
turns held a worker for 6 minutes).
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager

import pytest

from shared.arena_csv import DataFormatError, Pair, clean_text, parse_turns, read_arena_csv

MIB = 1 << 20
CALL_SECONDS = 5.0  # generous: the slowest call here takes well under a second alone
EMPTY_TURNS = 10_000


def _random_unicode(size: int) -> str:
    rng = random.Random(0)
    points = [rng.randrange(0x20, 0x30000) for _ in range(size)]
    return "".join(chr(point) for point in points if not 0xD800 <= point < 0xE000)


CELLS: dict[str, str] = {
    "newlines": "\n" * MIB,
    "crlf": "\r\n" * (MIB // 2),
    "spaces": " " * MIB,
    "blank_indented_lines": " \n" * (MIB // 2),
    "mixed_whitespace": " \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000" * (MIB // 11),
    "no_whitespace": "a" * MIB,
    "digits": "7" * MIB,
    "stars": "*" * MIB,
    "pipes": "|" * MIB,
    "hashes": "#" * MIB,
    "dots": "." * MIB,
    "dashes": "-" * MIB,
    "brackets": "[" * 100_000,
    "bullet_lines": "-\n" * (MIB // 2),
    "numbered_lines": "1.\n" * (MIB // 3),
    "header_lines": "#\n" * (MIB // 2),
    "pipe_lines": "|\n" * (MIB // 2),
    "table_rows_without_end": "| a | b \n" * (MIB // 9),
    "open_bold": "**" + "a*" * (MIB // 2),
    "number_salad": "1.2,3-" * (MIB // 6),
    "control": "".join(chr(code) for code in range(32)) * (MIB // 32),
    "combining": "e" + "\u0301" * 200_000,
    "cjk": "\u4e2d" * MIB,
    "emoji": "\U0001f600" * (MIB // 4),
    "random_unicode": _random_unicode(MIB // 4),
    "special_tokens": "[SEP]<|im_end|>" * (MIB // 15),
}
# The cells a tokenizer reads differently (one token per character, none at all, one huge word): enough to find a
# slow path without tokenizing every cell above (each pass over 1 MiB costs about a second here).
TOKENIZER_CELLS = (
    "newlines",
    "spaces",
    "no_whitespace",
    "digits",
    "stars",
    "control",
    "combining",
    "cjk",
    "random_unicode",
)


class CallTooSlowError(AssertionError):
    pass


@contextmanager
def at_most(seconds: float, what: str):
    """Fail if the block runs past `seconds`; an alarm interrupts pure-Python and regex work at the bound."""

    def stop(signum, frame):
        raise CallTooSlowError(f"{what} ran past {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.perf_counter()
    try:
        yield
    except CallTooSlowError as exc:
        # Raised afresh: the interrupted frames (inside a tokenizer or a regex) only confuse pytest's report.
        raise CallTooSlowError(str(exc)) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - started
    if elapsed > seconds:  # native code (a tokenizer) is only interrupted when it returns
        raise CallTooSlowError(f"{what} took {elapsed:.1f}s, over {seconds:g}s")


def bounded(function: Callable, *args, what: str, **kwargs):
    with at_most(CALL_SECONDS, what):
        return function(*args, **kwargs)


def _pair(cell: str) -> Pair:
    """The cell as the prompt and as response A; B an ordinary answer, so the similarity block compares them."""
    return Pair("1", (cell,), (cell,), ("An ordinary answer.\n- one item\n1. first",))


@pytest.fixture(scope="module")
def judge_tokenizer():
    from shared.settings import get_settings
    from workers.judge.engines import load_tokenizer

    return load_tokenizer(get_settings().judge_model_path)


@pytest.fixture(scope="module")
def encoder_tokenizer():
    from shared.settings import get_settings
    from workers.predictor.sentence_encoder import load_fast_tokenizer

    return load_fast_tokenizer(get_settings().text_encoder_path)


# --- cleaning and parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_cleaning_and_turn_parsing_are_bounded(name):
    from workers.jobs.score import _turns

    cell = CELLS[name]
    cleaned = bounded(clean_text, cell, what=f"clean_text({name})")
    assert cleaned == cell
    turns = bounded(parse_turns, json.dumps([cell]), row=1, column="prompt", row_id="1", what=f"parse_turns({name})")
    assert turns == (cell,)
    assert bounded(_turns, [cell, ""], what=f"score turns({name})") == (cell, "")


def test_lone_surrogates_are_repaired_in_bounded_time():
    cell = "a\ud800" * (MIB // 2)
    cleaned = bounded(clean_text, cell, what="clean_text(lone surrogates)")
    assert cleaned.encode("utf-8")
    assert len(cleaned) == len(cell)


def test_empty_turns_and_deep_nesting_parse_in_bounded_time():
    for turn in ("", "\n", None):
        cell = json.dumps([turn] * EMPTY_TURNS)
        turns = bounded(parse_turns, cell, row=1, column="response_a", row_id="1", what=f"{EMPTY_TURNS} turns")
        assert len(turns) == EMPTY_TURNS
    for cell in ("[" * 100_000, "[" * 100_000 + "]" * 100_000, '["' + "[" * 100_000 + '"]'):
        try:
            bounded(parse_turns, cell, row=1, column="prompt", row_id="1", what="nested JSON")
        except DataFormatError as exc:
            assert len(str(exc)) < 400  # names the fix, never echoes the cell


def test_a_csv_of_pathological_cells_reads_in_bounded_time():
    def quoted(turns: list[str]) -> str:
        return '"' + json.dumps(turns).replace('"', '""') + '"'

    lines = ["id,prompt,response_a,response_b"]
    for index, name in enumerate(("newlines", "no_whitespace", "pipes", "combining", "control", "random_unicode")):
        cell = quoted([CELLS[name][: MIB // 4]])
        lines.append(f"{index},{cell},{cell},{cell}")
    lines.append(f"empty,{quoted([''] * EMPTY_TURNS)},{quoted([])},{quoted([])}")
    dataset = bounded(read_arena_csv, "\n".join(lines).encode(), what="read_arena_csv")
    assert len(dataset) == 7 and len(dataset.pairs[-1].prompt) == EMPTY_TURNS


# --- features the text model reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_style_and_length_features_are_bounded(name):
    from workers.common.pairs import length_features
    from workers.predictor.text_model import style_features

    pair = _pair(CELLS[name])
    features, names = bounded(style_features, [pair], what=f"style_features({name})")
    assert features.shape == (1, len(names))
    bounded(length_features, [pair], what=f"length_features({name})")


def test_features_of_many_empty_turns_are_bounded():
    """The measured failure: empty turns are joined by blank lines into one long run of newlines."""
    from workers.predictor.text_model import style_features

    for turn in ("", "\n", " "):
        turns = (turn,) * EMPTY_TURNS * 3
        pair = Pair("1", turns, turns, turns)
        bounded(style_features, [pair], what=f"style_features({EMPTY_TURNS * 3} turns of {turn!r})")


@pytest.mark.parametrize("name", TOKENIZER_CELLS)
def test_encoder_input_is_cut_before_tokenizing(name, encoder_tokenizer):
    from workers.predictor.sentence_encoder import encoder_input, token_ids

    cell = CELLS[name]
    head = bounded(encoder_input, cell, encoder_tokenizer, max_tokens=256, what=f"encoder_input({name})")
    assert cell.startswith(head)
    (ids,) = bounded(token_ids, [cell], encoder_tokenizer, max_tokens=256, what=f"token_ids({name})")
    assert 2 <= len(ids) <= 256  # [CLS] ... [SEP], cut to the budget

    def tokens(text: str) -> list[int]:
        encoder_tokenizer.enable_truncation(256)
        try:
            return encoder_tokenizer.encode(text).ids
        finally:
            encoder_tokenizer.no_truncation()

    # What was cut off never changes the tokens the encoder reads (on 64 Ki characters: tokenizing all of a 1 MiB
    # cell, as the encoder used to, takes seconds).
    part = cell[: 1 << 16]
    assert tokens(encoder_input(part, encoder_tokenizer, max_tokens=256)) == tokens(part)


# --- the judge's prompt ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKENIZER_CELLS)
def test_prompt_building_and_splitting_are_bounded(name, judge_tokenizer):
    from shared.settings import get_settings
    from workers.judge.prompts import JudgePromptBuilder, keep_head_and_tail, render_conversation

    cell = CELLS[name]
    bounded(render_conversation, (cell,), (cell,), ("short",), what=f"render_conversation({name})")
    n_tokens = len(judge_tokenizer.encode(cell, add_special_tokens=False))
    shortened = bounded(
        keep_head_and_tail, cell, judge_tokenizer, max_tokens=500, n_tokens=n_tokens, what=f"keep_head_and_tail({name})"
    )
    assert len(judge_tokenizer.encode(shortened, add_special_tokens=False)) <= 520 or n_tokens <= 500
    builder = JudgePromptBuilder(judge_tokenizer, max_model_len=get_settings().MAX_MODEL_LEN)
    prompts = bounded(builder.build, _pair(cell), what=f"JudgePromptBuilder.build({name})")
    assert all(len(prefix) <= builder.prefix_budget for prefix in prompts.prefixes)


def test_prompt_of_many_empty_turns_is_bounded(judge_tokenizer):
    from workers.judge.prompts import JudgePromptBuilder

    builder = JudgePromptBuilder(judge_tokenizer, max_model_len=2048)
    turns = ("",) * EMPTY_TURNS
    prompts = bounded(builder.build, Pair("1", turns, turns, turns), what=f"build({EMPTY_TURNS} empty turns)")
    assert prompts.truncated and all(len(prefix) <= builder.prefix_budget for prefix in prompts.prefixes)
