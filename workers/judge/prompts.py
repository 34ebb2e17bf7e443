"""The discriminator prompt: shared conversation prefix first, one criterion question last.

Both engines receive token ids built here, so they see exactly the same tokens, and the
five criterion prompts of one (pair, order) share their prefix token for token, which is
what lets vLLM's prefix cache reuse the conversation's KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property

from shared.arena_csv import Pair


@dataclass(frozen=True)
class Criterion:
    name: str
    question: str


CRITERIA: tuple[Criterion, ...] = (
    Criterion("relevance", "Which response stays more relevant to what the user asked?"),
    Criterion("accuracy", "Which response is more factually accurate and correct?"),
    Criterion("clarity", "Which response is clearer and easier to understand?"),
    Criterion("logical_flow", "Which response has the better logical flow and structure?"),
    Criterion("responsiveness", "Which response better does what the user asked, completely and helpfully?"),
)
CRITERION_NAMES = tuple(criterion.name for criterion in CRITERIA)
VOTES: tuple[str, ...] = ("A", "B", "AB", "NA")

SYSTEM_MESSAGE = (
    "You are an impartial judge. You compare two AI assistants' responses to the same user"
    " conversation and answer with a single vote."
)
ANSWER_INSTRUCTION = (
    "Answer with exactly one of: A (Assistant A is better), B (Assistant B is better),"
    " AB (they are equally good) or NA (the criterion does not apply)."
)
_CONVERSATION_MARK = "\u2063CONVERSATION\u2063"
_QUESTION_MARK = "\u2063QUESTION\u2063"
_SAFETY_TOKENS = 8
_MIN_PIECE_TOKENS = 24
# Texts over this many times the budget are cut before the first render: rendering tokenizes the whole conversation
# twice (both orders), a second or more per MiB on a busy core, for a prompt that keeps a small part of it.
_PRESHRINK_FACTOR = 4
# Only the ends of a very long text are read, at most this many characters per token of budget at each end (English
# averages about 4). A text longer than twice that (30,000 characters at the default MAX_MODEL_LEN; the longest
# real one has 15,822) has its tokens counted at its ends and the rest estimated at their rate: it is cut to the
# budget whatever its exact size, which only the gap marker quotes. keep_head_and_tail splits only the ends of a
# text over _WHOLE_TEXT_CHARS: the splitter measures every piece with the tokenizer, character by character where a
# text has no separator, and splitting all of 1 MiB took minutes, for a middle that is dropped anyway.
_WINDOW_CHARS_PER_TOKEN = 8
_WHOLE_TEXT_CHARS = 16_384
# A turn renders to at least this many tokens (three headers, even when empty): a conversation with more turns than
# the budget can hold at this rate shows only its first and last turns, so thousands of turns never get tokenized.
_MIN_TURN_TOKENS = 16


def render_conversation(
    prompt: tuple[str, ...], first: tuple[str, ...], second: tuple[str, ...], *, shown: list[int] | None = None
) -> str:
    """Interleave turns: the user's turn, then Assistant A's and Assistant B's answers to it.

    Args:
        shown: the turns to write (0-based, ascending), default all; a line marks a gap between them.
    """
    n_turns = max(len(prompt), len(first), len(second), 1)
    blocks = []
    previous = -1
    for turn in range(n_turns) if shown is None else shown:
        if turn > previous + 1:
            blocks.append(f"[... {turn - previous - 1} turns omitted ...]")
        previous = turn
        label = f" (turn {turn + 1} of {n_turns})" if n_turns > 1 else ""
        blocks.append(f"## User{label}\n{_turn(prompt, turn)}")
        blocks.append(f"## Assistant A{label}\n{_turn(first, turn)}")
        blocks.append(f"## Assistant B{label}\n{_turn(second, turn)}")
    return "\n\n".join(blocks)


def _turn(turns: tuple[str, ...], index: int) -> str:
    text = turns[index] if index < len(turns) else ""
    return text if text.strip() else "(empty)"


@dataclass(frozen=True)
class JudgePrompts:
    """Token ids for one pair: one prefix per order (0: A first, 1: B first)."""

    prefixes: tuple[list[int], list[int]]
    truncated: bool


class JudgePromptBuilder:
    """Builds token-id prompts for any tokenizer (its chat template when it has one).

    Args:
        tokenizer: a transformers tokenizer of the judge model.
        max_model_len: token budget of one whole prompt (prefix + criterion question).
        criteria: the criteria asked, in order.
        answer_instruction: how to answer, after each question (the synth job asks for JSON with a rationale).
    """

    def __init__(
        self,
        tokenizer,
        *,
        max_model_len: int,
        criteria: tuple[Criterion, ...] = CRITERIA,
        answer_instruction: str = ANSWER_INSTRUCTION,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.criteria = criteria
        head, middle, tail = self._template_parts()
        self.head_ids = self._encode(head)
        self.suffix_ids = [
            self._encode(f"{middle}{criterion.question} {answer_instruction}{tail}") for criterion in criteria
        ]
        self.prefix_budget = max_model_len - max(len(ids) for ids in self.suffix_ids) - _SAFETY_TOKENS
        if self.prefix_budget < 128:
            raise ValueError(f"MAX_MODEL_LEN={max_model_len} leaves no room for the conversation; use at least 512")

    def _encode(self, text: str) -> list[int]:
        """Our own template text: its special-token strings (<|im_start|> …) are meant as turn markers."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode_user_text(self, text: str) -> list[int]:
        """Conversation text from a dataset or a request: special-token strings in it stay plain text.

        split_special_tokens tokenizes "<|im_end|>" as the characters it is made of, so a pair cannot end the
        user turn and open a system or assistant turn of its own; the judge still reads the markers as text.
        Escaping or stripping them instead would change what the judge sees and depends on knowing each
        model's markers; the tokenizer knows them all.
        """
        return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    def _template_parts(self) -> tuple[str, str, str]:
        user_content = f"{_CONVERSATION_MARK}{_QUESTION_MARK}"
        if getattr(self.tokenizer, "chat_template", None):
            messages = [
                {"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": user_content},
            ]
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            rendered = f"{SYSTEM_MESSAGE}\n\n{user_content}\nAnswer:\n"
        head, rest = rendered.split(_CONVERSATION_MARK)
        _, tail = rest.split(_QUESTION_MARK)
        return head + "# Conversation\n", "\n\n# Question\n", tail

    @cached_property
    def vote_token_ids(self) -> list[int]:
        """The first token of each vote; they must be distinct for the votes to be readable."""
        ids = []
        for vote in VOTES:
            encoded = self._encode(vote)
            if not encoded:
                raise ValueError(f"the tokenizer encodes vote {vote!r} to nothing")
            ids.append(encoded[0])
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"this tokenizer cannot tell the votes {VOTES} apart by their first token ({ids}); "
                "use a model whose tokenizer has single tokens for them"
            )
        return ids

    def _count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text; one far longer than any prompt is counted at its ends (_WINDOW_CHARS_PER_TOKEN)."""
        window = self.prefix_budget * _WINDOW_CHARS_PER_TOKEN
        samples = {}
        for index, text in enumerate(texts):
            if text:  # thousands of empty turns cost nothing to count
                samples[index] = text if len(text) <= 2 * window else text[:window] + text[-window:]
        if not samples:
            return [0] * len(texts)
        encoded = self.tokenizer(list(samples.values()), add_special_tokens=False, split_special_tokens=True)
        counts = [0] * len(texts)
        for index, ids in zip(samples, encoded["input_ids"], strict=True):
            counts[index] = round(len(ids) * len(texts[index]) / len(samples[index]))
        return counts

    def build(self, pair: Pair) -> JudgePrompts:
        """Token-id prefixes of both orders, truncated to the budget when the conversation is too long."""
        pieces = {"prompt": list(pair.prompt), "a": list(pair.response_a), "b": list(pair.response_b)}
        shown = self._shown_turns(max(len(pair.prompt), len(pair.response_a), len(pair.response_b), 1))
        preshrunk = self._preshrink(pieces, shown)
        truncated = preshrunk is not None or shown is not None
        pieces = preshrunk or pieces
        for _attempt in range(4):
            prefixes = self._render_both_orders(pieces, shown)
            overflow = max(len(ids) for ids in prefixes) - self.prefix_budget
            if overflow <= 0:
                return JudgePrompts(prefixes=prefixes, truncated=truncated)
            shrunk = self._shrink(pieces, overflow, shown)
            if shrunk is None:
                break
            pieces, truncated = shrunk, True
        # Formatting overhead alone exceeds the budget (hundreds of turns): cut the token middle.
        return JudgePrompts(prefixes=tuple(self._cut_middle(ids) for ids in prefixes), truncated=True)

    def _shown_turns(self, n_turns: int) -> list[int] | None:
        """The first and last turns when more turns than the budget can hold at _MIN_TURN_TOKENS, else None (all):
        enough to fill the budget from both ends, which is all _cut_middle would keep of them."""
        keep = self.prefix_budget // _MIN_TURN_TOKENS + 1
        if n_turns <= 2 * keep:
            return None
        return [*range(keep), *range(n_turns - keep, n_turns)]

    def _preshrink(self, pieces: dict[str, list[str]], shown: list[int] | None) -> dict[str, list[str]] | None:
        """The texts shrunk to about the budget when they are far over it (_PRESHRINK_FACTOR), else None.

        The overflow is estimated from the texts' own tokens and the formatting's (the conversation rendered with
        empty turns); build() then renders the shrunk texts and corrects the estimate.
        """
        texts = [text for _, _, text in _shown_texts(pieces, shown)]
        if 4 * sum(map(len, texts)) <= _PRESHRINK_FACTOR * self.prefix_budget:  # a character is at most 4 tokens
            return None
        lengths = self._count_tokens(texts)
        if sum(lengths) <= _PRESHRINK_FACTOR * self.prefix_budget:
            return None
        empty = {key: ("",) * len(turns) for key, turns in pieces.items()}
        skeleton = render_conversation(empty["prompt"], empty["a"], empty["b"], shown=shown)
        overflow = len(self.head_ids) + len(self._encode_user_text(skeleton)) + sum(lengths) - self.prefix_budget
        return self._shrink(pieces, overflow, shown, lengths)

    def _render_both_orders(self, pieces: dict[str, list[str]], shown: list[int] | None) -> tuple[list[int], list[int]]:
        prompt, first, second = tuple(pieces["prompt"]), tuple(pieces["a"]), tuple(pieces["b"])
        return (
            self.head_ids + self._encode_user_text(render_conversation(prompt, first, second, shown=shown)),
            self.head_ids + self._encode_user_text(render_conversation(prompt, second, first, shown=shown)),
        )

    def _shrink(
        self,
        pieces: dict[str, list[str]],
        overflow: int,
        shown: list[int] | None,
        lengths: list[int] | None = None,
    ) -> dict[str, list[str]] | None:
        """Water-fill: cap the longest texts so the total shrinks by `overflow` tokens; short texts stay whole.

        None when no text is over the cap (the formatting of many turns is what is too long).
        """
        flat = _shown_texts(pieces, shown)
        if lengths is None:
            lengths = self._count_tokens([text for _, _, text in flat])
        target_total = max(sum(lengths) - overflow - _SAFETY_TOKENS, _MIN_PIECE_TOKENS * len(flat))
        cap = _water_level(lengths, target_total, floor=_MIN_PIECE_TOKENS)
        if all(length <= cap for length in lengths):
            return None
        shrunk = {key: list(texts) for key, texts in pieces.items()}
        for (key, index, text), length in zip(flat, lengths, strict=True):
            if length > cap:
                shrunk[key][index] = keep_head_and_tail(text, self.tokenizer, max_tokens=cap, n_tokens=length)
        return shrunk

    def _cut_middle(self, ids: list[int]) -> list[int]:
        keep = self.prefix_budget
        head = keep // 2
        return ids[:head] + ids[len(ids) - (keep - head) :]


def _shown_texts(pieces: dict[str, list[str]], shown: list[int] | None) -> list[tuple[str, int, str]]:
    """(key, turn, text) of every text the prompt shows."""
    turns = None if shown is None else set(shown)
    return [
        (key, index, text)
        for key, texts in pieces.items()
        for index, text in enumerate(texts)
        if turns is None or index in turns
    ]


def _water_level(lengths: list[int], target_total: int, *, floor: int) -> int:
    """Largest cap c with sum(min(length, c)) <= target_total (never below `floor`)."""
    low, high = floor, max(lengths, default=floor)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(length, middle) for length in lengths) <= target_total:
            low = middle
        else:
            high = middle - 1
    return low


def keep_head_and_tail(text: str, tokenizer, *, max_tokens: int, n_tokens: int) -> str:
    """Shorten `text` to about `max_tokens`, keeping its beginning and end at natural boundaries.

    langchain-text-splitters cuts the text into token-sized chunks at paragraph, line and word
    boundaries; whole chunks are kept from both ends and the gap is marked, so the judge knows
    that text was left out. Only the ends of a long text are split (_WINDOW_CHARS_PER_TOKEN), so the
    time depends on `max_tokens`, not on the length of the text.

    Args:
        text: the text to shorten.
        tokenizer: the judge's tokenizer; `max_tokens` and `n_tokens` count its tokens.
        max_tokens: about how many tokens to keep, gap marker included.
        n_tokens: how many tokens `text` has (the caller has counted them already).
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    marker_budget = 16
    room = max(max_tokens - marker_budget, 8)
    chunk_tokens = max(min(room // 4, 256), 4)
    count_tokens = _token_counter(tokenizer)
    splitter = RecursiveCharacterTextSplitter(
        length_function=count_tokens, chunk_size=chunk_tokens, chunk_overlap=0, strip_whitespace=False
    )
    head_room, tail_room = room - room // 3, room // 3  # the start usually carries the answer
    if len(text) <= max(room * _WINDOW_CHARS_PER_TOKEN, _WHOLE_TEXT_CHARS):
        chunks = splitter.split_text(text)
        sizes = [count_tokens(chunk) for chunk in chunks]
        head_end = _chunks_within(sizes, head_room)
        tail_start = len(chunks) - _chunks_within(sizes[head_end:][::-1], tail_room)
        head_chunks, tail_chunks = chunks[:head_end], chunks[tail_start:]
        omitted = sum(sizes[head_end:tail_start])
    else:
        # Twice this text's own characters per token, so dense text (CJK, emoji, digits) is not split 8 at a time.
        chars_per_token = min(_WINDOW_CHARS_PER_TOKEN, 2 * len(text) / max(n_tokens, 1))
        head_window, tail_window = math.ceil(head_room * chars_per_token), math.ceil(tail_room * chars_per_token)
        head_split, tail_split = splitter.split_text(text[:head_window]), splitter.split_text(text[-tail_window:])
        head_sizes, tail_sizes = [count_tokens(chunk) for chunk in head_split], [count_tokens(c) for c in tail_split]
        head_end = _chunks_within(head_sizes, head_room)
        tail_start = len(tail_split) - _chunks_within(tail_sizes[::-1], tail_room)
        head_chunks, tail_chunks = head_split[:head_end], tail_split[tail_start:]
        omitted = n_tokens - sum(head_sizes[:head_end]) - sum(tail_sizes[tail_start:])
    if not head_chunks and not tail_chunks:  # no chunk fits (a single token is most of the room): cut tokens
        window = room * _WINDOW_CHARS_PER_TOKEN
        head_ids = tokenizer.encode(text[:window], add_special_tokens=False)[:head_room]
        tail_ids = tokenizer.encode(text[-window:], add_special_tokens=False)[-tail_room:] if tail_room else []
        head_text, tail_text = tokenizer.decode(head_ids), tokenizer.decode(tail_ids)
        omitted = n_tokens - len(head_ids) - len(tail_ids)
    else:
        head_text, tail_text = "".join(head_chunks), "".join(tail_chunks)
    return f"{head_text}\n[... {max(omitted, 0)} tokens omitted ...]\n{tail_text}"


def _chunks_within(sizes: list[int], room: int) -> int:
    """How many of the chunks, from the first, fit in `room` tokens."""
    used = 0
    for count, size in enumerate(sizes):
        if used + size > room:
            return count
        used += size
    return len(sizes)


def _token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens of a piece of conversation text, as the prompt encodes it; cached, since the splitter measures each
    piece up to three times and a repetitive text is made of few distinct pieces.

    A fast tokenizer's own backend counts a piece in microseconds where the Python wrapper takes a hundred or more
    (the splitter may measure thousands of single characters). `encode_special_tokens` is the backend's
    split_special_tokens, set for the call and put back.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)

    @cache  # one splitter's pieces: at most its text's length
    def count(text: str) -> int:
        if backend is None:
            return len(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
        previous, backend.encode_special_tokens = backend.encode_special_tokens, True
        try:
            return len(backend.encode(text, add_special_tokens=False))
        finally:
            backend.encode_special_tokens = previous

    return count
