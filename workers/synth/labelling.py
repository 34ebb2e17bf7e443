"""Synth: a teacher LLM labels pairs on the five criteria, with a rationale, for training smaller judges.

What the teacher does for each distinct pair (no Celery in here; workers/tasks.py and jobs.py wrap it):
  1. Votes: the discriminator prompt's restricted next-token log-probabilities over A / B / AB / NA, for every
     criterion, in both orders (the judge core, judge/votes.py); the conversation prefix is computed once per order
     and reused from vLLM's prefix cache by its five questions. Both orders cancel position bias: a
     criterion's probabilities are the mean of the two orders, in the pair's own orientation.
  2. Rationales: one structured generation per criterion in the A-first order, held to a JSON schema
     ({"vote", "rationale"}) by vLLM's guided decoding, parsed and checked; a reply that still fails is retried
     once with sampling, then recorded as a parse failure. It reuses the same cached prefix.
  3. The soft label (A, B, tie) is the judge's own aggregate of the criterion votes, averaged over orders.

Outputs in synth/<job_id>/ (or any folder): pairs.csv (Kaggle train schema, soft winner columns, usable by
`arena train --input pairs.csv --weight 0.5`), annotations.jsonl (one line per input row), metrics.json
(throughput; agreement with human labels when the input has them).

Resumable and idempotent: distinct pairs are processed in fixed chunks, each published once as
chunks/chunk-NNNNNN.jsonl; a restarted run skips the chunks already there. Duplicate pairs (same prompt and
the same two responses, in either order) are labelled once and copied, swapped where their order is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.arena_csv import ArenaDataset, Pair, read_arena_csv
from shared.artifacts import METRICS_NAME, SYNTH_ANNOTATIONS_NAME, SYNTH_CHUNKS_DIR, SYNTH_CONFIG_NAME, SYNTH_PAIRS_NAME
from shared.errors import UserError
from shared.schemas import SynthJobRequest
from shared.settings import Settings
from shared.spreadsheet import safe_cell
from shared.storage import atomic_creator, atomic_write_text, atomic_writer
from workers.judge.engines import EngineConfig
from workers.judge.outcomes import CLASS_LABELS
from workers.judge.prompts import CRITERIA, CRITERION_NAMES, VOTES, JudgePromptBuilder
from workers.judge.votes import aggregate_votes, judge_pairs

log = logging.getLogger(__name__)

RATIONALE_SCHEMA = {
    "type": "object",
    "properties": {
        "vote": {"type": "string", "enum": list(VOTES)},
        "rationale": {"type": "string", "minLength": 1, "maxLength": 160},
    },
    "required": ["vote", "rationale"],
    "additionalProperties": False,
}
RATIONALE_INSTRUCTION = (
    'Reply with JSON only: {"vote": "A", "B", "AB" (equally good) or "NA" (does not apply),'
    ' "rationale": one short sentence saying why}.'
)


class SynthError(UserError, ValueError):
    """The synth request cannot run as given; the message says what to change."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything a synth run needs; stored as synth_config.json and checked when a run resumes.

    Attributes:
        input_path: Kaggle-format CSV of pairs; the winner columns are optional (used only for metrics.json).
        output_dir: the folder to create or resume.
        teacher_model: local folder of the teacher LLM (vLLM-servable).
        chunk_pairs: distinct pairs per chunk (the unit of resumption).
        rationale_tokens: token budget of one rationale reply; 0 writes votes and probabilities only.
        max_model_len: token budget of one teacher prompt (long conversations are truncated head + tail).
        source: the `source` column of pairs.csv.
        seed: sampling seed of the retries.
        limit: label only the first N rows (a trial run; a later run without it reuses its chunks).
    """

    input_path: str
    output_dir: str
    teacher_model: str
    chunk_pairs: int = SynthJobRequest.model_fields["chunk_pairs"].default
    rationale_tokens: int = SynthJobRequest.model_fields["rationale_tokens"].default
    max_model_len: int = Settings.model_fields["MAX_MODEL_LEN"].default
    source: str = "synth"
    seed: int = SynthJobRequest.model_fields["seed"].default
    limit: int | None = None

    def resume_key(self) -> dict:
        """Settings that decide what each chunk holds: a resumed run must use the same ones."""
        keep = ("teacher_model", "chunk_pairs", "rationale_tokens", "max_model_len", "seed")
        return {name: getattr(self, name) for name in keep}


# --- duplicates -------------------------------------------------------------------------------------------------


def pair_key(pair: Pair) -> tuple[str, bool]:
    """A key shared by the same prompt and responses in either order, and whether this pair is the swapped one."""
    first, second = json.dumps(pair.response_a), json.dumps(pair.response_b)
    swapped = second < first
    low, high = (second, first) if swapped else (first, second)
    digest = hashlib.sha256("\x1e".join([json.dumps(pair.prompt), low, high]).encode()).hexdigest()[:24]
    return digest, swapped


@dataclass
class DistinctPairs:
    """Distinct pairs in first-seen order, and for each input row: its distinct pair and whether it is swapped."""

    pairs: list[Pair]
    keys: list[str]
    row_to_distinct: np.ndarray
    row_swapped: np.ndarray


def distinct_pairs(pairs: Sequence[Pair]) -> DistinctPairs:
    keys: list[str] = []
    first_swapped: dict[str, bool] = {}
    position: dict[str, int] = {}
    distinct: list[Pair] = []
    row_to_distinct = np.zeros(len(pairs), dtype=int)
    row_swapped = np.zeros(len(pairs), dtype=bool)
    for row, pair in enumerate(pairs):
        key, swapped = pair_key(pair)
        if key not in position:
            position[key], first_swapped[key] = len(distinct), swapped
            distinct.append(pair)
            keys.append(key)
        row_to_distinct[row] = position[key]
        row_swapped[row] = swapped != first_swapped[key]  # relative to the distinct pair as it was judged
    return DistinctPairs(distinct, keys, row_to_distinct, row_swapped)


# --- one chunk --------------------------------------------------------------------------------------------------


class Teacher:
    """The teacher engine (vLLM) and its two prompt builders (votes; JSON rationales)."""

    def __init__(self, config: SynthConfig, *, engine=None, engine_config: EngineConfig | None = None):
        """Args:
        config: the synth run (teacher model, prompt length, seed).
        engine: an engine to use instead of starting one (tests).
        engine_config: how the teacher's vLLM engine runs (`teacher_engine_config`); default: the engine
            defaults at the run's prompt length and seed.
        """
        from workers.judge.engines import VllmEngine, load_tokenizer

        tokenizer = load_tokenizer(config.teacher_model)
        self.vote_builder = JudgePromptBuilder(tokenizer, max_model_len=config.max_model_len)
        self.rationale_builder = JudgePromptBuilder(
            tokenizer, max_model_len=config.max_model_len, answer_instruction=RATIONALE_INSTRUCTION
        )
        if self.rationale_builder.prefix_budget < self.vote_builder.prefix_budget:
            # Same conversation prefix for both, so the rationale prompts hit the prefix cache of the vote prompts.
            self.vote_builder = JudgePromptBuilder(
                tokenizer,
                max_model_len=config.max_model_len
                - (self.vote_builder.prefix_budget - self.rationale_builder.prefix_budget),
            )
        engine_config = engine_config or EngineConfig(kind="vllm")
        self.engine = engine or VllmEngine(
            config.teacher_model,
            config=engine_config.replace(kind="vllm", max_model_len=config.max_model_len, seed=config.seed),
        )
        if not hasattr(self.engine, "generate_json"):
            raise SynthError("the synth job needs the vLLM engine (structured generation); set JUDGE_ENGINE=vllm")

    def close(self) -> None:
        self.engine.close()


def _parse_reply(text: str) -> dict | None:
    try:
        reply = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(reply, dict) or reply.get("vote") not in VOTES:
        return None
    rationale = reply.get("rationale")
    if not isinstance(rationale, str) or not rationale.strip():
        return None
    return {"vote": reply["vote"], "rationale": " ".join(rationale.split())}


def _rationales(teacher: Teacher, pairs: Sequence[Pair], config: SynthConfig) -> tuple[list[list[dict | None]], dict]:
    """Per pair and criterion: the parsed {"vote", "rationale"} of the A-first order, or None after a retry."""
    prompts = [teacher.rationale_builder.build(pair).prefixes[0] for pair in pairs]
    suffixes = teacher.rationale_builder.suffix_ids
    token_lists = [prefix + suffix for prefix in prompts for suffix in suffixes]
    stats = {"generated_tokens": 0, "retries": 0, "parse_failures": 0}
    replies = teacher.engine.generate_json(token_lists, schema=RATIONALE_SCHEMA, max_tokens=config.rationale_tokens)
    parsed = [_parse_reply(text) for text, _ in replies]
    stats["generated_tokens"] += sum(count for _, count in replies)
    failed = [index for index, reply in enumerate(parsed) if reply is None]
    if failed:
        # Usually a reply cut by the token budget; one sampled retry with more room, then give up on it.
        stats["retries"] += len(failed)
        retried = teacher.engine.generate_json(
            [token_lists[index] for index in failed],
            schema=RATIONALE_SCHEMA,
            max_tokens=2 * config.rationale_tokens,
            temperature=0.7,
            seed=config.seed + 1,
        )
        stats["generated_tokens"] += sum(count for _, count in retried)
        for index, (text, _) in zip(failed, retried, strict=True):
            parsed[index] = _parse_reply(text)
        stats["parse_failures"] += sum(parsed[index] is None for index in failed)
    n_criteria = len(suffixes)
    return [parsed[row * n_criteria : (row + 1) * n_criteria] for row in range(len(pairs))], stats


def label_chunk(teacher: Teacher, pairs: Sequence[Pair], keys: Sequence[str], config: SynthConfig) -> dict:
    """Votes (both orders), rationales and soft labels of a chunk of distinct pairs; JSON-ready."""
    started = time.perf_counter()
    before_prompt, before_cached = teacher.engine.prompt_tokens, teacher.engine.cached_prompt_tokens
    result = judge_pairs(pairs, engine=teacher.engine, prompt_builder=teacher.vote_builder, tta=True)
    stats = {"generated_tokens": 0, "retries": 0, "parse_failures": 0}
    rationales: list[list[dict | None]] = [[None] * len(CRITERIA) for _ in pairs]
    if config.rationale_tokens > 0:
        rationales, stats = _rationales(teacher, pairs, config)
    labels = aggregate_votes(result.vote_logprobs).mean(axis=1)
    probabilities = np.exp(result.vote_logprobs)  # (n, 2, n_criteria, 4) in the pair's orientation
    records = []
    for row, (pair, key) in enumerate(zip(pairs, keys, strict=True)):
        criteria = {}
        for column, name in enumerate(CRITERION_NAMES):
            mean = probabilities[row, :, column].mean(axis=0)
            reply = rationales[row][column]
            criteria[name] = {
                "vote": VOTES[int(mean.argmax())],
                "probability": round(float(mean.max()), 5),
                "probabilities": _rounded(dict(zip(VOTES, mean.tolist(), strict=True))),
                "by_order": [
                    _rounded(dict(zip(VOTES, probabilities[row, order, column].tolist(), strict=True)))
                    for order in range(probabilities.shape[1])
                ],
                "rationale": reply["rationale"] if reply else None,
                "rationale_vote": reply["vote"] if reply else None,
            }
        records.append(
            {
                "key": key,
                "id": pair.id,
                "label": _rounded(dict(zip(CLASS_LABELS, labels[row].tolist(), strict=True))),
                "criteria": criteria,
                "truncated": bool(result.truncated[row]),
            }
        )
    return {
        "records": records,
        "stats": {
            **stats,
            "pairs": len(pairs),
            "seconds": round(time.perf_counter() - started, 3),
            "prompt_tokens": teacher.engine.prompt_tokens - before_prompt,
            "cached_prompt_tokens": teacher.engine.cached_prompt_tokens - before_cached,
        },
    }


def _rounded(values: dict) -> dict:
    return {name: round(float(value), 5) for name, value in values.items()}


# --- the run ----------------------------------------------------------------------------------------------------


def chunk_path(output_dir: Path, index: int) -> Path:
    return Path(output_dir) / SYNTH_CHUNKS_DIR / f"chunk-{index:06d}.jsonl"


def _claim_output_dir(config: SynthConfig) -> None:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / SYNTH_CONFIG_NAME
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("resume_key") != config.resume_key():
            raise SynthError(
                f"{output_dir} holds a synth run with other settings ({stored.get('resume_key')}); use another"
                " output folder, or the same teacher, chunk size and rationale budget to resume it"
            )
    else:
        atomic_write_text(path, json.dumps({"config": asdict(config), "resume_key": config.resume_key()}, indent=1))


def run_synth(
    config: SynthConfig,
    *,
    teacher_factory: Callable[[], Teacher] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_filter: Callable[[int], bool] | None = None,
) -> dict:
    """Label every distinct pair of the input chunk by chunk (skipping chunks already written), then assemble.

    Args:
        config: input, output folder and teacher settings.
        teacher_factory: builds the teacher when a chunk needs labelling (not at all when every chunk exists).
        on_progress: called with (distinct pairs done, distinct pairs in all) after every chunk; raising from it
            stops the run between chunks (finished chunks stay, so a rerun resumes).
        chunk_filter: only the chunks it accepts (sharding across workers); assembly then waits for the others.

    Returns:
        metrics.json's content, or {"chunks_missing": n} when other shards still have chunks to write.
    """
    started = time.perf_counter()
    dataset = read_arena_csv(config.input_path).head(config.limit)
    if len(dataset) == 0:
        raise SynthError(f"{config.input_path} has no rows to label")
    if config.chunk_pairs < 1:
        raise SynthError("chunk_pairs must be at least 1")
    _claim_output_dir(config)
    output_dir = Path(config.output_dir)
    distinct = distinct_pairs(dataset.pairs)
    n_chunks = math.ceil(len(distinct.pairs) / config.chunk_pairs)
    teacher = None
    reused = written = 0
    try:
        for index in range(n_chunks):
            if chunk_filter is not None and not chunk_filter(index):
                continue
            path = chunk_path(output_dir, index)
            start, stop = index * config.chunk_pairs, min((index + 1) * config.chunk_pairs, len(distinct.pairs))
            if path.exists() and _chunk_keys(path) != distinct.keys[start:stop]:
                # A trial run's last chunk (cut by its --limit) holds fewer pairs: label the full chunk.
                log.warning("chunk %d holds other pairs than this run's; labelling it again", index)
                path.unlink()
            if path.exists():
                reused += 1
            else:
                if teacher is None:
                    teacher = (teacher_factory or (lambda: Teacher(config)))()
                chunk = label_chunk(teacher, distinct.pairs[start:stop], distinct.keys[start:stop], config)
                try:
                    with atomic_creator(path, "w") as handle:
                        handle.write(json.dumps({"chunk": index, "stats": chunk["stats"]}) + "\n")
                        handle.writelines(json.dumps(record) + "\n" for record in chunk["records"])
                except FileExistsError:
                    log.warning("chunk %d was written by another run; keeping that one", index)
                written += 1
            if on_progress is not None:
                on_progress(stop, len(distinct.pairs))
    finally:
        if teacher is not None:
            teacher.close()
    missing = [index for index in range(n_chunks) if not chunk_path(output_dir, index).exists()]
    if missing:
        return {"chunks_missing": len(missing), "chunks_written": written, "chunks_reused": reused}
    return assemble_synth(
        config, dataset, distinct, n_chunks, run={"chunks_written": written, "chunks_reused": reused}, started=started
    )


def _chunk_keys(path: Path) -> list[str]:
    with open(path) as handle:
        handle.readline()
        return [json.loads(line)["key"] for line in handle]


def read_chunks(output_dir: Path, n_chunks: int) -> tuple[dict[str, dict], list[dict]]:
    records: dict[str, dict] = {}
    stats = []
    for index in range(n_chunks):
        with open(chunk_path(output_dir, index)) as handle:
            stats.append(json.loads(handle.readline())["stats"])
            for line in handle:
                record = json.loads(line)
                records[record["key"]] = record
    return records, stats


def _oriented(record: dict, swapped: bool) -> dict:
    """A distinct pair's annotation as it reads for an input row that has the responses the other way round."""
    if not swapped:
        return record
    swap = {"A": "B", "B": "A"}
    criteria = {}
    for name, criterion in record["criteria"].items():
        flip = {vote: criterion["probabilities"][swap.get(vote, vote)] for vote in VOTES}
        criteria[name] = {
            **criterion,
            "vote": swap.get(criterion["vote"], criterion["vote"]),
            "probabilities": flip,
            "by_order": [
                {vote: order[swap.get(vote, vote)] for vote in VOTES} for order in reversed(criterion["by_order"])
            ],
            "rationale_vote": swap.get(criterion["rationale_vote"], criterion["rationale_vote"]),
            # The rationale's words still say "A" for the judged order; flag it rather than rewrite it.
            "rationale_refers_to_swapped_order": criterion["rationale"] is not None,
        }
    label = record["label"]
    return {**record, "label": {"A": label["B"], "B": label["A"], "tie": label["tie"]}, "criteria": criteria}


def assemble_synth(
    config: SynthConfig, dataset: ArenaDataset, distinct: DistinctPairs, n_chunks: int, *, run: dict, started: float
) -> dict:
    """pairs.csv + annotations.jsonl for every input row, and metrics.json (written last: it marks completion)."""
    output_dir = Path(config.output_dir)
    records, chunk_stats = read_chunks(output_dir, n_chunks)
    rows = []
    for row, pair in enumerate(dataset.pairs):
        key = distinct.keys[distinct.row_to_distinct[row]]
        annotation = _oriented(records[key], bool(distinct.row_swapped[row]))
        duplicate_of = distinct.pairs[distinct.row_to_distinct[row]].id
        rows.append({**annotation, "id": pair.id, "duplicate_of": None if duplicate_of == pair.id else duplicate_of})
    labels = np.array([[row["label"][name] for name in CLASS_LABELS] for row in rows])
    labels = labels / labels.sum(axis=1, keepdims=True)
    frame = _kaggle_frame(config, dataset, labels)
    with atomic_writer(output_dir / SYNTH_PAIRS_NAME, "w", newline="") as handle:
        frame.map(safe_cell).to_csv(handle, index=False)
    with atomic_writer(output_dir / SYNTH_ANNOTATIONS_NAME, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    metrics = _metrics(config, dataset, distinct, rows, labels, chunk_stats, run, started)
    atomic_write_text(output_dir / METRICS_NAME, json.dumps(metrics, indent=1))
    return metrics


def _kaggle_frame(config: SynthConfig, dataset: ArenaDataset, labels: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": dataset.ids,
            "model_a": [""] * len(dataset),
            "model_b": [""] * len(dataset),
            "prompt": [json.dumps(list(pair.prompt)) for pair in dataset.pairs],
            "response_a": [json.dumps(list(pair.response_a)) for pair in dataset.pairs],
            "response_b": [json.dumps(list(pair.response_b)) for pair in dataset.pairs],
            "winner_model_a": labels[:, 0],
            "winner_model_b": labels[:, 1],
            "winner_tie": labels[:, 2],
            "source": [config.source] * len(dataset),
        }
    )


def _metrics(config, dataset, distinct, rows, labels, chunk_stats, run, started) -> dict:
    from workers.common.soft_labels import multiclass_log_loss

    labelled_seconds = sum(stats["seconds"] for stats in chunk_stats)
    labelled_pairs = sum(stats["pairs"] for stats in chunk_stats)
    prompt_tokens = sum(stats["prompt_tokens"] for stats in chunk_stats)
    generated = sum(stats["generated_tokens"] for stats in chunk_stats)
    rationales = [criterion for row in rows for criterion in row["criteria"].values()]
    metrics: dict = {
        "teacher_model": Path(config.teacher_model).name,
        "rows": len(dataset),
        "distinct_pairs": len(distinct.pairs),
        "duplicate_rows": len(dataset) - len(distinct.pairs),
        "chunks": len(chunk_stats),
        **run,
        "throughput": {
            "teacher_seconds": round(labelled_seconds, 2),
            "pairs_per_second": round(labelled_pairs / labelled_seconds, 3) if labelled_seconds else None,
            "prompt_tokens": prompt_tokens,
            "cached_prompt_tokens": sum(stats["cached_prompt_tokens"] for stats in chunk_stats),
            "generated_tokens": generated,
            "prompt_tokens_per_second": round(prompt_tokens / labelled_seconds, 1) if labelled_seconds else None,
            "generated_tokens_per_second": round(generated / labelled_seconds, 1) if labelled_seconds else None,
        },
        "rationales": {
            "per_pair": len(CRITERIA) if config.rationale_tokens > 0 else 0,
            "retries": sum(stats["retries"] for stats in chunk_stats),
            "parse_failures": sum(stats["parse_failures"] for stats in chunk_stats),
            "agree_with_vote": _share(
                [item["rationale_vote"] == item["vote"] for item in rationales if item["rationale_vote"]]
            ),
        },
        "truncated_rows": sum(row["truncated"] for row in rows),
        "label_mean": _rounded(dict(zip(CLASS_LABELS, labels.mean(axis=0).tolist(), strict=True))),
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "files": [SYNTH_PAIRS_NAME, SYNTH_ANNOTATIONS_NAME, METRICS_NAME],
    }
    if dataset.labels is not None:
        human = dataset.labels
        decided = human[:, 2] < 0.5
        predicted = labels.argmax(axis=1)
        prior = np.tile(human.mean(axis=0), (len(human), 1))
        metrics["versus_human_labels"] = {
            "agreement": float((predicted == human.argmax(axis=1)).mean()),
            "non_tie_accuracy": float(
                ((labels[decided, 0] > labels[decided, 1]) == (human[decided, 0] > human[decided, 1])).mean()
            )
            if decided.any()
            else None,
            "log_loss": multiclass_log_loss(human, labels),
            "class_prior_log_loss": multiclass_log_loss(human, prior),
            "uniform_log_loss": math.log(3),
            "per_criterion_agreement": {
                name: _share(
                    [
                        _vote_class(row["criteria"][name]["vote"]) == int(truth)
                        for row, truth in zip(rows, human.argmax(axis=1), strict=True)
                    ]
                )
                for name in CRITERION_NAMES
            },
        }
    return metrics


def _vote_class(vote: str) -> int:
    return {"A": 0, "B": 1, "AB": 2}.get(vote, -1)


def _share(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None
