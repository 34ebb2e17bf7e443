"""The discriminator prompt: shared conversation prefix first, one criterion question last.

Both engines receive token ids built here, so they see exactly the same tokens, and the
five criterion prompts of one (pair, order) share their prefix token for token, which is
what lets vLLM's prefix cache reuse the conversation's KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

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


def render_conversation(prompt: tuple[str, ...], first: tuple[str, ...], second: tuple[str, ...]) -> str:
    """Interleave turns: the user's turn, then Assistant A's and Assistant B's answers to it."""
    n_turns = max(len(prompt), len(first), len(second), 1)
    blocks = []
    for turn in range(n_turns):
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
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    def build(self, pair: Pair) -> JudgePrompts:
        """Token-id prefixes of both orders, truncated to the budget when the conversation is too long."""
        pieces = {"prompt": list(pair.prompt), "a": list(pair.response_a), "b": list(pair.response_b)}
        truncated = False
        for _attempt in range(4):
            prefixes = self._render_both_orders(pieces)
            overflow = max(len(ids) for ids in prefixes) - self.prefix_budget
            if overflow <= 0:
                return JudgePrompts(prefixes=prefixes, truncated=truncated)
            pieces = self._shrink(pieces, overflow)
            truncated = True
        # Formatting overhead alone exceeds the budget (hundreds of turns): cut the token middle.
        return JudgePrompts(prefixes=tuple(self._cut_middle(ids) for ids in prefixes), truncated=True)

    def _render_both_orders(self, pieces: dict[str, list[str]]) -> tuple[list[int], list[int]]:
        prompt, first, second = tuple(pieces["prompt"]), tuple(pieces["a"]), tuple(pieces["b"])
        return (
            self.head_ids + self._encode_user_text(render_conversation(prompt, first, second)),
            self.head_ids + self._encode_user_text(render_conversation(prompt, second, first)),
        )

    def _shrink(self, pieces: dict[str, list[str]], overflow: int) -> dict[str, list[str]]:
        """Water-fill: cap the longest texts so the total shrinks by `overflow` tokens; short texts stay whole."""
        flat = [(key, index, text) for key, texts in pieces.items() for index, text in enumerate(texts)]
        lengths = self._count_tokens([text for _, _, text in flat])
        target_total = max(sum(lengths) - overflow - _SAFETY_TOKENS, _MIN_PIECE_TOKENS * len(flat))
        cap = _water_level(lengths, target_total, floor=_MIN_PIECE_TOKENS)
        shrunk = {key: list(texts) for key, texts in pieces.items()}
        for (key, index, text), length in zip(flat, lengths, strict=True):
            if length > cap:
                shrunk[key][index] = keep_head_and_tail(text, self.tokenizer, max_tokens=cap, n_tokens=length)
        return shrunk

    def _cut_middle(self, ids: list[int]) -> list[int]:
        keep = self.prefix_budget
        head = keep // 2
        return ids[:head] + ids[len(ids) - (keep - head) :]


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
    that text was left out.
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    marker_budget = 16
    room = max(max_tokens - marker_budget, 8)
    chunk_tokens = max(min(room // 4, 256), 4)
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=chunk_tokens, chunk_overlap=0, strip_whitespace=False
    )
    chunks = splitter.split_text(text)
    sizes = [len(tokenizer.encode(chunk, add_special_tokens=False)) for chunk in chunks]
    head_room, tail_room = room - room // 3, room // 3  # the start usually carries the answer
    head_end, used = 0, 0
    while head_end < len(chunks) and used + sizes[head_end] <= head_room:
        used += sizes[head_end]
        head_end += 1
    tail_start, used = len(chunks), 0
    while tail_start > head_end and used + sizes[tail_start - 1] <= tail_room:
        used += sizes[tail_start - 1]
        tail_start -= 1
    if head_end == 0 and tail_start == len(chunks):
        ids = tokenizer.encode(text, add_special_tokens=False)
        head_text = tokenizer.decode(ids[:head_room])
        tail_text = tokenizer.decode(ids[len(ids) - tail_room :]) if tail_room else ""
        omitted = len(ids) - head_room - tail_room
    else:
        head_text = "".join(chunks[:head_end])
        tail_text = "".join(chunks[tail_start:])
        omitted = sum(sizes[head_end:tail_start])
    return f"{head_text}\n[... {max(omitted, 0)} tokens omitted ...]\n{tail_text}"
