"""Request and result models of the REST API, and the job record stored in SHARED_DIR/jobs/ (both sides)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, computed_field

from shared import clock

JobKind = Literal["predict", "train", "synth", "leaderboard"]
# queued: recorded, tasks not sent yet (the sweeper sends them if the gateway died first); dispatched: sent;
# running: a worker started; assembling: every chunk done, one worker writes the submission; then terminal.
JobState = Literal["queued", "dispatched", "running", "assembling", "succeeded", "failed", "cancelled"]
ChunkState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATES: tuple[str, ...] = ("queued", "dispatched", "running", "assembling")

ID_PATTERN = r"^[0-9a-f]{32}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RELATIVE_PATH_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"

ObjectId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ModelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
RelativePath = Annotated[str, StringConstraints(pattern=RELATIVE_PATH_PATTERN, max_length=512)]

# Upper bounds of request numbers: far above any real use, low enough that no job starts on an absurd value.
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit: a larger one fails the job with a traceback
MAX_TIME_LIMIT_S = 30 * 24 * 3600
MAX_ROWS = 100_000_000


def utc_now() -> datetime:
    """Now on the one clock every host shares (Redis' time, shared/clock.py): leases, sends and starts written here
    are compared on other hosts."""
    return datetime.fromtimestamp(clock.now(), UTC)


class StrictModel(BaseModel):
    """Request bodies: unknown fields are errors, so a typo never silently falls back to a default."""

    # allow_inf_nan=False: JSON parsers accept NaN and Infinity, which pass a bare `gt=0` and reach a job.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JudgeOptions(StrictModel):
    model: ModelName | None = Field(
        default=None, description="Folder name under SHARED_DIR/models/; default: the embedded SmolLM2-135M-Instruct."
    )
    adapter: ModelName | None = Field(
        default=None,
        description="Adapter folder name under SHARED_DIR/adapters/: a judge from the train job (GET /v1/adapters;"
        " its own calibration.json applies unless `calibration` is given) or a causal-LM LoRA that changes the votes.",
    )
    calibration: RelativePath | None = Field(
        default=None,
        description="Calibration JSON (from `arena calibrate`), relative to SHARED_DIR, under models/ or adapters/;"
        " e.g. adapters/judge-v1/calibration.json. Without adapter, calibration and raw: the default predictor"
        " (SHARED_DIR/models/DEFAULT_PREDICTOR, a calibrated text model).",
    )
    raw: bool = Field(
        default=False,
        description="The judge's uncalibrated output: the model's criterion votes (worse than a uniform guess on real"
        " data), or an adapter's softmax ignoring its calibration.json; for fitting your own calibrator (`arena"
        " calibrate`) or inspecting the judge.",
    )
    tta: bool = Field(default=True, description="Also judge with the responses swapped and average both orders.")


class PredictJobRequest(JudgeOptions):
    dataset: ObjectId = Field(description="Id of an uploaded dataset (POST /v1/datasets).")
    time_limit_s: int | None = Field(
        default=None,
        ge=1,
        description="Fail the job when it runs longer than this (checked between batches); at most, and by default,"
        " the server's JOB_TIME_LIMIT_S.",
    )


class WeightedDataset(StrictModel):
    dataset: ObjectId = Field(description="Id of an uploaded labelled dataset.")
    weight: float = Field(default=1.0, gt=0, le=100, description="Loss weight of its rows (e.g. 0.5 for synthetic).")


class TrainJobRequest(StrictModel):
    dataset: ObjectId = Field(description="Id of an uploaded labelled dataset.")
    validation_dataset: ObjectId | None = Field(default=None, description="Labelled dataset for validation.")
    model: ModelName | None = Field(default=None, description="Base model folder name under SHARED_DIR/models/.")
    adapter_name: ModelName | None = Field(default=None, description="Name of the adapter folder to create.")
    epochs: float = Field(default=2.0, gt=0, le=50, description="Passes over the training rows (both orders).")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    lora_rank: int = Field(default=16, ge=1, le=256)
    max_length: int = Field(default=512, ge=64, le=32768, description="Token budget of one training example.")
    # Added with the train pipeline (issue 4); every field has a default, so earlier requests stay valid.
    extra_datasets: list[WeightedDataset] = Field(
        default_factory=list,
        max_length=32,
        description="More labelled datasets (e.g. synthetic pairs) with a loss weight each.",
    )
    lora_alpha: int = Field(default=32, ge=1, le=1024, description="LoRA alpha (scale = alpha / rank).")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[Annotated[str, StringConstraints(max_length=128)]] = Field(
        default=["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,
        description="Modules that get LoRA.",
    )
    lora_top_layers: int | None = Field(
        default=None, ge=1, le=1024, description="LoRA on the top N decoder layers only (a much cheaper backward pass)."
    )
    batch_size: int = Field(default=4, ge=1, le=256)
    grad_accum: int = Field(default=1, ge=1, le=256, description="Forward passes per optimizer step.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    max_steps: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Stop after this many optimizer steps."
    )
    time_budget_min: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIME_LIMIT_S / 60,
        description="Stop training after this many minutes and publish the best adapter so far.",
    )
    val_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of prompts held out for validation (without validation_dataset)."
    )
    max_val_rows: int | None = Field(
        default=None, ge=1, le=MAX_ROWS, description="Cap on validation rows (evaluation cost)."
    )
    text_model: bool = Field(
        default=True,
        description="Stack the adapter with the text model (frozen MiniLM + length features, LightGBM) when the"
        " stacked calibrator validates better; needs the sentence encoder on the worker (TEXT_ENCODER_PATH).",
    )
    quantization: Literal["4bit"] | None = Field(
        default=None,
        description="4bit: QLoRA, LoRA on an NF4-quantized base (a GPU worker with bitsandbytes; an 8B base in about"
        " 6 GB). Default: the base in bf16 on a GPU (fp16 where bf16 is missing), fp32 on a CPU.",
    )
    # The text-only fit (issue 32); off by default, so earlier requests mean what they meant.
    text_only: bool = Field(
        default=False,
        description="Fit a text predictor (sentence-encoder + length/style features, LightGBM, its calibrator) on the"
        " datasets instead of a LoRA judge: minutes on a CPU. The LoRA options do not apply; predict jobs and"
        " /v1/score use it as `adapter`. Its report: grouped CV per source and a learning curve of your rows.",
    )
    # Defaults measured with scripts/bench/bench_user_mixing.py (docs/benchmarks.md, "Mixing your rows with ours"):
    # 200 to 1,300 rows of a source the shipped data lacks, plus the shipped rows at 0.1 each and the calibrator on
    # the user's rows, scored best or level with every other mix, the user's rows alone included.
    include_shipped_data: bool = Field(
        default=True,
        description="text_only: fit on the server's shipped labelled data (DEFAULT_TRAIN_CSV) too, each row weighing"
        " shipped_data_weight against 1 for yours; the calibrator is fitted on your rows (100 or more). By default"
        " it is left out, with a note in the report, when the server has none or your rows plus it pass"
        " TEXT_FIT_MAX_ROWS; false: your rows alone.",
    )
    shipped_data_weight: float = Field(
        default=0.1, gt=0, le=100, description="text_only with include_shipped_data: loss weight of the shipped rows."
    )


class SynthJobRequest(StrictModel):
    dataset: ObjectId = Field(description="Id of an uploaded dataset of pairs to label (winner columns optional).")
    teacher_model: ModelName | None = Field(
        default=None, description="Teacher model folder name under SHARED_DIR/models/ (default: the judge model)."
    )
    chunk_pairs: int = Field(default=32, ge=1, le=4096, description="Distinct pairs per chunk (the unit of resuming).")
    rationale_tokens: int = Field(
        default=64, ge=0, le=1024, description="Token budget of one rationale; 0 writes votes and probabilities only."
    )
    limit: int | None = Field(default=None, ge=1, le=MAX_ROWS, description="Label only the first N rows (a trial run).")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class LeaderboardJobRequest(StrictModel):
    dataset: ObjectId = Field(
        description="Id of an uploaded labelled dataset with model_a and model_b (the human votes are ranked)."
    )
    bootstrap: int = Field(
        default=1000, ge=0, le=10_000, description="Resampling rounds of the 95% intervals (0: ratings only)."
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    time_limit_s: int | None = Field(
        default=None, ge=1, le=MAX_TIME_LIMIT_S, description="Fail the job when it runs longer than this."
    )


class ScorePair(StrictModel):
    id: str | None = Field(default=None, max_length=128, description="Echoed back; defaults to the pair's position.")
    prompt: list[str] | str = Field(description="The user turn(s).")
    response_a: list[str] | str = Field(description="Assistant A's turn(s).")
    response_b: list[str] | str = Field(description="Assistant B's turn(s).")


class ScoreRequest(JudgeOptions):
    pairs: list[ScorePair] = Field(min_length=1, description="A few pairs (at most SCORE_MAX_PAIRS).")


class PairProbabilities(BaseModel):
    id: str
    winner_model_a: float
    winner_model_b: float
    winner_tie: float


class ScoreResponse(BaseModel):
    probabilities: list[PairProbabilities]
    seconds: float
    judge: dict


class DatasetInfo(BaseModel):
    id: str
    name: str = Field(description="The uploaded file's name.")
    rows: int
    labelled: bool = Field(description="True when winner_model_a/winner_model_b/winner_tie are present.")
    model_names: bool | None = Field(
        default=None,
        description="True when model_a and model_b are present (a leaderboard can rank them); None: uploaded before"
        " this was recorded.",
    )
    bytes: int
    sha256: str
    created_at: datetime
    tenant: str | None = Field(
        default=None,
        description="The tenant whose key made it (API_KEYS_FILE; `admin` for API_KEY); None: made before tenants,"
        " seen by the admin only.",
    )


class JobCreated(BaseModel):
    job_id: str
    kind: JobKind
    state: JobState


class Progress(BaseModel):
    done: int = 0
    total: int = 0


class ChunkRecord(BaseModel):
    """One chunk of a predict job's rows: the unit a worker pulls from its queue, judges, publishes and, when its
    worker dies, the unit that is re-queued."""

    index: int
    queue: str = Field(description="The queue its task waits on: the job's device class (cpu or gpu).")
    start: int = Field(description="First row (0-based) of the dataset in this chunk.")
    stop: int = Field(description="One past the last row.")
    task_id: str = Field(description="The Celery task id of the chunk's current attempt; other deliveries are stale.")
    state: ChunkState = "queued"
    done: int = 0
    attempts: int = 0
    worker: str | None = None
    worker_instance: str | None = Field(
        default=None,
        description="The process instance of `worker` that runs it (a random id made at each worker start): a worker"
        " back under the same name with another instance no longer holds it.",
    )
    error: str | None = None
    sent_at: datetime | None = Field(default=None, description="When the current task id was sent to its queue.")
    lease_until: datetime | None = Field(
        default=None,
        description="A running chunk's lease, renewed by each batch; past it the sweeper re-queues the chunk.",
    )
    summary: dict = Field(default_factory=dict, description="What the chunk's judging measured, once it succeeded.")
    started_at: datetime | None = Field(default=None, description="When its current attempt started.")
    finished_at: datetime | None = Field(default=None, description="When it succeeded.")


class JobRecord(BaseModel):
    """One job, as stored in SHARED_DIR/jobs/<id>.json: the source of truth for GET /v1/jobs."""

    id: str
    kind: JobKind
    state: JobState = "queued"
    params: dict = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress = Field(default_factory=Progress)
    chunks: list[ChunkRecord] = Field(
        default_factory=list,
        # Records written before chunks were pulled from a shared queue call them shards.
        validation_alias=AliasChoices("chunks", "shards"),
        description="A predict job's chunks, in row order.",
    )
    task_ids: list[str] = Field(
        default_factory=list,
        description="Every Celery task id of the job (for cancel); for train and synth the last one is current.",
    )
    queue: str | None = Field(default=None, description="The queue of a train or synth job's task.")
    dispatched_at: datetime | None = Field(
        default=None, description="When the job's tasks were sent (train, synth: its current task)."
    )
    worker: str | None = Field(default=None, description="The worker running a train or synth job.")
    worker_instance: str | None = Field(
        default=None, description="The process instance of `worker` that runs the job (see ChunkRecord)."
    )
    attempts: int = Field(default=0, description="Starts of a train or synth job, redeliveries included.")
    lease_until: datetime | None = Field(
        default=None, description="A running train or synth job's lease, renewed by its progress reports."
    )
    error: str | None = None
    assembler: str | None = Field(
        default=None,
        description="The worker that claimed assembling a predict job's submission (the one whose chunk completed the"
        " set); set once, under the record's lock.",
    )
    assembler_instance: str | None = Field(
        default=None, description="The process instance of `assembler` (a restarted assembler no longer holds it)."
    )
    artifacts: list[str] = Field(default_factory=list, description="File names under GET .../artifacts/{name}.")
    result: dict = Field(default_factory=dict)
    tenant: str | None = Field(
        default=None,
        description="The tenant whose key made it (API_KEYS_FILE; `admin` for API_KEY); None: made before tenants,"
        " seen by the admin only.",
    )

    @computed_field
    @property
    def timings(self) -> dict:
        def seconds(start: datetime | None, end: datetime | None) -> float | None:
            return None if start is None or end is None else round((end - start).total_seconds(), 3)

        return {
            "queued_seconds": seconds(self.created_at, self.started_at),
            "run_seconds": seconds(self.started_at, self.finished_at),
            "total_seconds": seconds(self.created_at, self.finished_at),
        }

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class AdapterInfo(BaseModel):
    """A trained adapter in SHARED_DIR/adapters/<name>/ and its validation figures (from its metrics.json)."""

    name: str
    kind: Literal["lora", "text"] = Field(
        default="lora",
        description="lora: a LoRA judge (PEFT files) and what it stacks; text: a text predictor (`arena train"
        " --text-only`: text model + calibrator, no LLM).",
    )
    task_type: str | None = Field(description="PEFT task type: SEQ_CLS for a judge from the train job.")
    base_model: str | None = None
    complete: bool = Field(
        description="True once training wrote metrics.json; False while it trains (or for a hand-copied adapter)."
    )
    val_log_loss: float | None = Field(default=None, description="Raw adapter, both orders averaged.")
    val_accuracy: float | None = None
    calibrated_val_log_loss: float | None = Field(
        default=None, description="Its calibrator (adapter + length features), grouped cross-validation."
    )
    val_rows: int | None = None
    train_rows: int | None = None
    steps: int | None = None
    calibration: str | None = Field(
        default=None, description="Its calibration file, relative to SHARED_DIR (the predict job's `calibration`)."
    )
    modified_at: datetime
    tenant: str | None = Field(
        default=None,
        description="The tenant whose key made it (API_KEYS_FILE; `admin` for API_KEY); None: made before tenants,"
        " seen by the admin only.",
    )


class Liveness(BaseModel):
    status: Literal["ok"] = Field(default="ok", description="Always ok: the gateway process answers.")


class Health(BaseModel):
    """GET /readyz: whether the stack can take work now, and if not, why."""

    status: Literal["ok", "degraded"]
    gateway: str = "ok"
    broker: Literal["ok", "unreachable"]
    workers: dict[str, int] = Field(description="Queue name → how many live workers consume it.")
    shared_free_bytes: int | None = Field(
        default=None, description="Free bytes on SHARED_DIR (None: it could not be read)."
    )
    reasons: list[str] = Field(
        default_factory=list, description="Why the stack is not ready (empty when status is ok): what to fix."
    )
