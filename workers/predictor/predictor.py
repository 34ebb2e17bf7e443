"""The one predict path: a PredictRequest (what is asked, resolved to files) and the Predictor that answers it (a
Judge, its checked calibrator, the order setting). `arena predict`, predict jobs and POST /v1/score all go through
here; nothing else opens a judge for them or applies a calibrator (tests/unit/test_one_predict_path.py).

The Judge (engines + prompt builders + the text model, loaded once, judging many datasets) sits above judge/ (LLM
inference) and stacks its outputs with the text model; the calibrator turns them into probabilities.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from shared.arena_csv import ArenaDataset, Pair
from shared.artifacts import MODEL_CONFIG_NAME
from shared.calibration_file import applied_calibration
from shared.settings import Settings
from shared.storage import JudgeOptionsError, default_predictor_dir, is_text_predictor, public_path, resolve_judge_files
from workers.common.metrics import MODEL_LOAD_SECONDS
from workers.judge.engines import (
    EngineConfig,
    JudgeEngine,
    ModelNotFoundError,
    load_engine,
    load_tokenizer,
    resolve_dtype,
)
from workers.judge.prompts import JudgePromptBuilder
from workers.judge.votes import JudgeResult, judge_pairs
from workers.predictor.calibration import CalibrationError, Calibrator, fit_calibrator

log = logging.getLogger(__name__)
# Pairs the text model reads features of between progress reports: ~1 s each on 2 CPU cores.
TEXT_CHUNK_PAIRS = 256
# The share of a text-model predict's time spent embedding (measured: ~0.8 on 2 cores with onnx-int8).
EMBEDDING_PROGRESS_SHARE = 0.8
ProgressCallback = Callable[[int, int], None]


class Judge:
    """An engine plus its prompt builder: load once, judge many datasets.

    With a classifier adapter (`arena train`, PEFT task_type SEQ_CLS) the judge is that classifier; the
    criterion-vote engine then runs only when asked for (`with_votes`, for a calibrator that stacks both).

    Args:
        engine: the criterion-vote engine, or None when only a classifier judges.
        prompt_builder: prompt/token builder for the engine's model.
        chunk_pairs: pairs per engine call.
        description: model/adapter/engine, recorded with results.
        classifier: a classifier engine (workers/judge/classifier.py), or None.
        classifier_builder: the classifier's prompt builder (the adapter's max length and question).
        text_model: the adapter's text model (text_model.py), stacked by its calibrator, or None.
        text_encoder: the sentence encoder the text model reads, or None.
    """

    def __init__(
        self,
        engine: JudgeEngine | None,
        prompt_builder: JudgePromptBuilder | None,
        *,
        chunk_pairs: int,
        description: dict,
        classifier=None,
        classifier_builder: JudgePromptBuilder | None = None,
        text_model=None,
        text_encoder=None,
        domain_reference=None,
    ):
        self.engine = engine
        self.prompt_builder = prompt_builder
        self.chunk_pairs = chunk_pairs
        self.description = description
        self.classifier = classifier
        self.classifier_builder = classifier_builder
        self.text_model = text_model
        self.text_encoder = text_encoder
        self.domain_reference = domain_reference

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        model_path: str | None = None,
        adapter_dir: str | None = None,
        engine_kind: str | None = None,
        enable_prefix_caching: bool = True,
        with_votes: bool = False,
    ) -> Judge:
        """Load the engine(s) for a model and optional adapter.

        Args:
            settings: engine settings (MAX_MODEL_LEN, JUDGE_DTYPE, ...).
            model_path: base model folder (default: MODEL_PATH or the embedded model).
            adapter_dir: a causal-LM LoRA (changes the criterion votes) or a classifier adapter from `arena train`.
            engine_kind: "vllm" or "transformers" (default: JUDGE_ENGINE).
            enable_prefix_caching: vLLM prefix caching.
            with_votes: with a classifier adapter, also cast the base model's criterion votes. The classifier and
                the vote engine then each get half of GPU_MEMORY_UTILIZATION: each vLLM engine reserves its share
                of the whole card when it starts, and both serve every task (a score request, a predict chunk), so
                they share the card rather than reload in turn.
        """
        from workers.judge.classifier import is_classifier_adapter

        if adapter_dir is not None and is_text_predictor(Path(adapter_dir)):
            return cls.open_text_predictor(settings, Path(adapter_dir))
        model_path = model_path or settings.judge_model_path
        config = EngineConfig.from_settings(
            settings, kind=engine_kind or settings.JUDGE_ENGINE, enable_prefix_caching=enable_prefix_caching
        )
        tokenizer = load_tokenizer(model_path)
        classifier_adapter = is_classifier_adapter(adapter_dir)
        if classifier_adapter and with_votes:
            config = config.replace(gpu_memory_utilization=config.gpu_memory_utilization / 2)
        judge = cls(
            None,
            None,
            chunk_pairs=settings.JUDGE_CHUNK_PAIRS,
            description={  # shown to clients (score answers, job records): no host paths
                "model": public_path(model_path, settings.SHARED_DIR),
                "adapter": public_path(adapter_dir, settings.SHARED_DIR) if adapter_dir else None,
                "engine": config.kind,
                "dtype": resolve_dtype(config.dtype),
                "max_model_len": config.max_model_len,
                "prefix_caching": enable_prefix_caching,
            },
        )
        if classifier_adapter:
            judge._open_classifier(settings, tokenizer, model_path=model_path, adapter_dir=adapter_dir, config=config)
        if not classifier_adapter or with_votes:
            judge.prompt_builder = JudgePromptBuilder(tokenizer, max_model_len=config.max_model_len)
            vote_adapter = None if classifier_adapter else adapter_dir
            judge.engine = load_engine(model_path, adapter_dir=vote_adapter, config=config)
        judge.description["criterion_votes"] = judge.engine is not None
        return judge

    @classmethod
    def open_text_predictor(cls, settings: Settings, predictor_dir: Path) -> Judge:
        """A judge that is only a text model (no LLM): the default predictor, or `arena train --text-only`."""
        from shared.artifacts import DOMAIN_REFERENCE_NAME
        from workers.predictor.domain import DomainReference

        text_model, text_encoder = _open_text_model(settings, predictor_dir)
        domain_reference = DomainReference.load(predictor_dir / DOMAIN_REFERENCE_NAME)
        return cls(
            None,
            None,
            chunk_pairs=TEXT_CHUNK_PAIRS,
            description={
                "predictor": predictor_dir.name,
                "kind": "text model",
                "encoder": text_model.encoder,
                "encoder_backend": text_model.encoder_backend,
                "criterion_votes": False,
                # The figures the job's domain check reports (None: fitted before the check existed).
                "domain_reference": None if domain_reference is None else domain_reference.figures,
            },
            text_model=text_model,
            text_encoder=text_encoder,
            domain_reference=domain_reference,
        )

    def _open_classifier(self, settings: Settings, tokenizer, *, model_path, adapter_dir, config: EngineConfig) -> None:
        """The classifier adapter, its prompt builder, and the text model it stacks (when it has one)."""
        from workers.judge.classifier import ClassifierSettings, classifier_prompt_builder, load_classifier

        adapter_settings = ClassifierSettings.load(adapter_dir)
        self.classifier_builder = classifier_prompt_builder(
            tokenizer, max_length=adapter_settings.max_length, question=adapter_settings.question
        )
        self.classifier = load_classifier(
            model_path, adapter_dir=adapter_dir, config=config.replace(max_model_len=adapter_settings.max_length)
        )
        self.text_model, self.text_encoder = _open_text_model(settings, adapter_dir)
        self.description.update(
            adapter_kind="classifier",
            classifier_max_length=adapter_settings.max_length,
            text_model=self.text_model is not None,
        )

    def judge(
        self, pairs: Sequence[Pair], *, tta: bool = True, on_progress: ProgressCallback | None = None
    ) -> JudgeResult:
        """Criterion votes (when this judge casts them) and classifier logits (when it has a classifier)."""
        from workers.judge.classifier import classify_pairs

        started = time.perf_counter()
        n_orders = 2 if tta else 1
        if self.engine is not None:
            result = judge_pairs(
                pairs,
                engine=self.engine,
                prompt_builder=self.prompt_builder,
                tta=tta,
                chunk_pairs=self.chunk_pairs,
                on_progress=on_progress if self.classifier is None else None,
            )
        else:
            result = JudgeResult(
                ids=[pair.id for pair in pairs],
                vote_logprobs=np.zeros((len(pairs), n_orders, 0, 4)),
                truncated=np.zeros(len(pairs), dtype=bool),
                seconds=0.0,
                prompt_tokens=0,
            )
        if self.classifier is not None:
            logits, truncated, prompt_tokens = classify_pairs(
                pairs,
                classifier=self.classifier,
                prompt_builder=self.classifier_builder,
                tta=tta,
                chunk_pairs=self.chunk_pairs,
                on_progress=on_progress,
            )
            result.adapter_logits = logits
            result.truncated = result.truncated | truncated
            result.prompt_tokens += prompt_tokens
        if self.text_model is not None:
            only_text = self.engine is None and self.classifier is None
            result.text_logprobs, result.transfer_logprobs, result.prompt_nearest_cosine = self._text_logprobs(
                pairs, on_progress=on_progress if only_text else None
            )
        result.seconds = time.perf_counter() - started
        return result

    def _text_logprobs(
        self, pairs: Sequence[Pair], *, on_progress: ProgressCallback | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The text model's (n, 3) log-probabilities, its transfer model's (None when it has none), and each row's
        nearest-training-prompt cosine when the predictor carries a domain reference (else None).

        Every distinct text of the whole set is embedded once (not per chunk: arena files repeat prompts across
        rows), then features and the booster run in chunks. Progress counts pairs: embedding fills the first
        EMBEDDING_PROGRESS_SHARE of the bar, by distinct texts done.
        """
        from workers.predictor.text_model import PairEmbeddings, clipped_log, embed_pairs

        total = len(pairs)

        def embedded(done: int, texts: int) -> None:
            if on_progress is not None and texts:
                on_progress(int(total * EMBEDDING_PROGRESS_SHARE * done / texts), total)

        embeddings = embed_pairs(pairs, self.text_encoder, on_progress=embedded)
        parts, transfer_parts = [], []
        for start in range(0, total, TEXT_CHUNK_PAIRS):
            rows = slice(start, start + TEXT_CHUNK_PAIRS)
            chunk = PairEmbeddings(embeddings.prompt[rows], embeddings.response_a[rows], embeddings.response_b[rows])
            probabilities, transfer = self.text_model.outputs(pairs[rows], chunk)
            parts.append(probabilities)
            transfer_parts.append(transfer)
            if on_progress is not None:
                done = start + len(parts[-1])
                on_progress(int(total * EMBEDDING_PROGRESS_SHARE + (1 - EMBEDDING_PROGRESS_SHARE) * done), total)
        nearest = None if self.domain_reference is None else self.domain_reference.nearest_cosines(embeddings.prompt)
        transfer = None
        if parts and self.text_model.transfer is not None:
            transfer = clipped_log(np.vstack(transfer_parts))
        return (clipped_log(np.vstack(parts)) if parts else np.zeros((0, 3))), transfer, nearest

    def close(self) -> None:
        for engine in (self.engine, self.classifier):
            if engine is not None:
                engine.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _open_text_model(settings: Settings, adapter_dir: str | Path):
    """The adapter's text model and the encoder it reads, or (None, None) when the adapter has none."""
    from shared.artifacts import TEXT_MODEL_NAME
    from workers.predictor.sentence_encoder import open_text_encoder
    from workers.predictor.text_model import TextModel

    path = Path(adapter_dir) / TEXT_MODEL_NAME
    if not path.is_file():
        return None, None
    text_model = TextModel.load(path)
    encoder_dir = text_encoder_dir(settings, text_model.encoder)
    # Applied with the backend it was fitted on: int8 and fp32 embeddings are close, not equal.
    return text_model, open_text_encoder(
        settings, encoder_dir, backend=text_model.encoder_backend, embedding_version=text_model.embedding_version
    )


def text_encoder_dir(settings: Settings, encoder_name: str) -> str:
    """The encoder folder a text model reads: TEXT_ENCODER_PATH when set, else models/<the encoder it names>."""
    if settings.TEXT_ENCODER_PATH:
        return settings.TEXT_ENCODER_PATH
    named = settings.models_dir / encoder_name
    return str(named) if (named / MODEL_CONFIG_NAME).is_file() else settings.text_encoder_path


@dataclass
class Prediction:
    probabilities: np.ndarray
    judge_result: JudgeResult
    calibrated: bool

    def summary(self) -> dict:
        result = self.judge_result
        return {
            "rows": len(result.ids),
            "truncated_rows": int(result.truncated.sum()),
            "orders": result.n_orders,
            "calibrated": self.calibrated,
            "judge_seconds": round(result.seconds, 2),
            "pairs_per_second": round(len(result.ids) / result.seconds, 3) if result.seconds else None,
            "prompt_tokens": result.prompt_tokens,
        }


# Who asked, so that a message names what they can change: a command-line flag or a request field.
AskedBy = Literal["cli", "job"]
# What to change so the orders match a calibrator fitted with (1, 2) orders per pair.
_TTA_HINTS: dict[str, tuple[str, str]] = {
    "cli": ("pass --no-tta", "drop --no-tta"),
    "job": ("set tta=false", "set tta=true"),
}


@dataclass(frozen=True)
class PredictRequest:
    """What a prediction asks for, resolved to files: the judge, the calibration, and how it judges.

    `from_params` (a predict job's or a score request's fields, names under SHARED_DIR) and `from_cli` (host paths)
    apply the same rules: a request that names no adapter, no calibration and no raw output gets the default
    predictor; a model without a calibration is refused (its raw votes score worse than a uniform guess); a trained
    adapter or predictor brings its own calibration.json unless a calibration is named or raw output asked for.

    Args:
        model_path: the base model folder; None: MODEL_PATH or the embedded model.
        adapter_dir: a causal-LM LoRA, a classifier adapter, or a text predictor (the default predictor is one).
        calibration_path: the calibration applied; None: the judge's raw probabilities.
        tta: judge both response orders and average them.
        engine_kind: "vllm" or "transformers"; None: JUDGE_ENGINE.
        enable_prefix_caching: vLLM prefix caching.
        with_votes: with a classifier adapter, also cast the base model's criterion votes (they are cast anyway
            when the calibrator reads them).
        asked_by: whose words the messages use: "cli" (--no-tta) or "job" (tta=false).
    """

    model_path: Path | None = None
    adapter_dir: Path | None = None
    calibration_path: Path | None = None
    tta: bool = True
    engine_kind: str | None = None
    enable_prefix_caching: bool = True
    with_votes: bool = False
    asked_by: AskedBy = "job"

    @classmethod
    def from_params(cls, settings: Settings, params: dict) -> PredictRequest:
        """The request of a predict job or of POST /v1/score: its `model`, `adapter`, `calibration`, `raw`, `tta`.

        Raises:
            ModelNotFoundError: a folder or file it names is missing; the message lists what exists.
            JudgeOptionsError: the options contradict each other, or name a model without a calibration.
            UnsafePathError: a name points outside its folder.
        """
        raw = bool(params.get("raw", False))
        try:
            model_path, adapter_dir, named = resolve_judge_files(
                settings.SHARED_DIR,
                settings.judge_model_path,
                model=params.get("model"),
                adapter=params.get("adapter"),
                calibration=params.get("calibration"),
                raw=raw,
                default_predictor=settings.DEFAULT_PREDICTOR,
            )
        except FileNotFoundError as exc:  # the user's to fix: fail the job now rather than retry it
            raise ModelNotFoundError(str(exc)) from None
        return cls(
            model_path=model_path,
            adapter_dir=adapter_dir,
            calibration_path=applied_calibration(adapter_dir, named, raw=raw),
            tta=bool(params.get("tta", True)),
            asked_by="job",
        )

    @classmethod
    def from_cli(
        cls,
        settings: Settings,
        *,
        model: str | Path | None = None,
        adapter: str | Path | None = None,
        calibration: str | Path | None = None,
        raw: bool = False,
        tta: bool = True,
        engine_kind: str | None = None,
        enable_prefix_caching: bool = True,
        with_votes: bool = False,
        saved_votes: bool = False,
    ) -> PredictRequest:
        """The request of `arena predict` or `arena calibrate`, from its flags (host paths, as given).

        Args:
            settings: SHARED_DIR and DEFAULT_PREDICTOR are read.
            model: --model.
            adapter: --adapter.
            calibration: --calibration; applied even with `raw`.
            raw: --raw: the judge's uncalibrated output, ignoring an adapter's own calibration.json.
            tta: not --no-tta.
            engine_kind: --engine.
            enable_prefix_caching: not --no-prefix-cache.
            with_votes: --with-votes.
            saved_votes: --votes: the judge's output comes from a file, so no judge is chosen (and no default
                predictor: those votes are what the user asked to see).

        Raises:
            JudgeOptionsError: --model without --calibration or --raw.
            FileNotFoundError: the default predictor is missing; the message says how to make it.
        """
        adapter_dir = Path(adapter) if adapter is not None else None
        if adapter_dir is None and calibration is None and not raw and not saved_votes:
            if model:
                raise JudgeOptionsError(
                    f"--model {model} without --calibration would write its raw criterion votes, which score worse"
                    " than a uniform guess; pass --calibration (from `arena calibrate`), or --raw to get the raw"
                    " votes anyway"
                )
            adapter_dir = default_predictor_dir(settings.SHARED_DIR, settings.DEFAULT_PREDICTOR)
        named = Path(calibration) if calibration is not None else None
        return cls(
            model_path=Path(model) if model else None,
            adapter_dir=adapter_dir,
            calibration_path=applied_calibration(adapter_dir, named, raw=raw),
            tta=tta,
            engine_kind=engine_kind,
            enable_prefix_caching=enable_prefix_caching,
            with_votes=with_votes,
            asked_by="cli",
        )


class Predictor:
    """A judge with its checked calibrator: the one way to turn pairs into probabilities.

    Make one with `open` (its own judge, closed with the predictor: the CLI, scripts), `cached` (the worker
    process's judge, kept for the next task: predict jobs, score) or `for_saved_votes` (no judge: `--votes`).

    Args:
        judge: the judge, or None to apply the calibrator to saved output only.
        calibrator: the calibrator, or None for the judge's raw probabilities.
        tta: judge both response orders.
        calibration_path: where the calibrator came from, for summaries.
        owns_judge: close the judge with the predictor.

    Raises:
        CalibrationError: the judge cannot feed the calibrator (checked here, before any judging).
    """

    def __init__(
        self,
        judge: Judge | None,
        calibrator: Calibrator | None,
        *,
        tta: bool = True,
        calibration_path: Path | None = None,
        owns_judge: bool = False,
    ):
        if judge is not None and calibrator is not None:
            n_orders = 2 if tta else 1
            calibrator.check_inputs(
                np.zeros((0, n_orders, 1, 4)) if judge.engine is not None else None,
                np.zeros((0, n_orders, 3)) if judge.classifier is not None else None,
                text_expected=judge.text_model is not None,
            )
        self.judge = judge
        self.calibrator = calibrator
        self.tta = tta
        self.calibration_path = calibration_path
        self.owns_judge = owns_judge

    @classmethod
    def open(cls, settings: Settings, request: PredictRequest) -> Predictor:
        """A predictor with a judge of its own, loaded now and closed with the predictor."""
        calibrator = _load_calibrator(request)  # before the engines: a misfit then costs no model load
        judge = Judge.open(settings, **_judge_options(request, calibrator))
        try:
            return cls(judge, calibrator, tta=request.tta, calibration_path=request.calibration_path, owns_judge=True)
        except BaseException:
            judge.close()
            raise

    @classmethod
    def cached(cls, settings: Settings, request: PredictRequest) -> Predictor:
        """A predictor on this worker process's judge: loaded on first use, reused by every later task asking for
        the same one. Only one judge is kept: asking for another closes the previous one (a GPU holds one engine
        at a time)."""
        calibrator = _load_calibrator(request)
        judge = _cached_judge(settings, _judge_options(request, calibrator))
        return cls(judge, calibrator, tta=request.tta, calibration_path=request.calibration_path)

    @classmethod
    def for_saved_votes(cls, request: PredictRequest) -> Predictor:
        """A predictor without a judge, to apply the request's calibrator to a judge's output saved earlier."""
        return cls(None, _load_calibrator(request), tta=request.tta, calibration_path=request.calibration_path)

    @property
    def calibrated(self) -> bool:
        return self.calibrator is not None

    @property
    def description(self) -> dict | None:
        """The judge's model/adapter/engine, as shown to clients; None without a judge."""
        return None if self.judge is None else self.judge.description

    def predict(self, dataset: ArenaDataset, *, on_progress: ProgressCallback | None = None) -> Prediction:
        """Judge every pair of `dataset`: calibrated probabilities with a calibrator, else the raw softmax.

        Args:
            dataset: the pairs (labels, if any, are not read).
            on_progress: called with (pairs done, pairs in all) as the judge goes.
        """
        if self.judge is None:
            raise RuntimeError("this predictor has no judge (made for saved votes): use apply()")
        result = self.judge.judge(dataset.pairs, tta=self.tta, on_progress=on_progress)
        return self.apply(result, dataset.pairs)

    def apply(self, result: JudgeResult, pairs: Sequence[Pair]) -> Prediction:
        """The calibrator applied to a judge's output (votes and/or classifier logits and/or the text model's);
        the raw softmax without one."""
        if self.calibrator is None:
            probabilities = result.raw_probabilities
        else:
            probabilities = self.calibrator.predict(
                result.vote_logprobs, pairs, adapter_logits=result.adapter_logits, text_logprobs=result.text_logprobs
            )
        return Prediction(probabilities=probabilities, judge_result=result, calibrated=self.calibrated)

    def close(self) -> None:
        if self.owns_judge and self.judge is not None:
            self.judge.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _load_calibrator(request: PredictRequest) -> Calibrator | None:
    """The request's calibrator (None: none), refused before any judging when the judge cannot feed it.

    Raises:
        CalibrationError: the file is unusable with this judge; the message says what to change.
    """
    path = request.calibration_path
    if path is None:
        return None
    from workers.judge.classifier import is_classifier_adapter

    calibrator = Calibrator.load(path)
    if calibrator.reads_orders and calibrator.n_orders != (2 if request.tta else 1):
        hint = _TTA_HINTS[request.asked_by][calibrator.n_orders - 1]
        raise CalibrationError(
            f"{Path(path).name} was fitted with {calibrator.n_orders} order(s) per pair; {hint} or refit"
            " the calibration"
        )
    if calibrator.needs_adapter and not is_classifier_adapter(request.adapter_dir):
        raise CalibrationError(
            f"{Path(path).name} stacks a trained classifier adapter; pass the adapter it was fitted with"
            " (--adapter DIR, or the job's adapter)"
        )
    return calibrator


def _judge_options(request: PredictRequest, calibrator: Calibrator | None) -> dict:
    """Judge.open's options for a request; the criterion votes are cast whenever the calibrator reads them."""
    return {
        "model_path": str(request.model_path) if request.model_path else None,
        "adapter_dir": str(request.adapter_dir) if request.adapter_dir else None,
        "engine_kind": request.engine_kind,
        "enable_prefix_caching": request.enable_prefix_caching,
        "with_votes": request.with_votes or (calibrator is not None and calibrator.needs_votes),
    }


_CACHED_JUDGES: dict[tuple, Judge] = {}


def _cached_judge(settings: Settings, options: dict) -> Judge:
    """The judge for these Judge.open options, loaded on first use and kept for later tasks of this process."""
    key = (
        options["model_path"] or settings.judge_model_path,
        options["adapter_dir"],
        options["engine_kind"] or settings.JUDGE_ENGINE,
        options["enable_prefix_caching"],
        options["with_votes"],
    )
    if key not in _CACHED_JUDGES:
        close_cached_judges()
        started = time.perf_counter()
        _CACHED_JUDGES[key] = Judge.open(settings, **options)
        MODEL_LOAD_SECONDS.labels("judge").set(time.perf_counter() - started)
        log.info("judge %s loaded in %.1fs", key, time.perf_counter() - started)
    return _CACHED_JUDGES[key]


def close_cached_judges() -> None:
    """Close this process's cached judge (worker shutdown, or before another job needs the memory)."""
    while _CACHED_JUDGES:
        _, judge = _CACHED_JUDGES.popitem()
        judge.close()


def calibrate_dataset(
    dataset: ArenaDataset,
    judge_result: JudgeResult,
    *,
    method: str,
    description: dict,
) -> Calibrator:
    if dataset.labels is None:
        raise ValueError("calibration needs labelled data (winner_model_a, winner_model_b, winner_tie)")
    started = time.perf_counter()
    calibrator = fit_calibrator(
        judge_result.vote_logprobs,
        dataset.pairs,
        dataset.labels,
        method=method,
        fitted_on=dict(description),
        adapter_logits=judge_result.adapter_logits,
        text_logprobs=judge_result.text_logprobs,
    )
    log.info("calibrator (%s) fitted in %.1fs", method, time.perf_counter() - started)
    return calibrator
