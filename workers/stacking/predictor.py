"""The Judge (engines + prompt builders + the text model, loaded once, judging many datasets) and predict_dataset:
judge, calibrate. It sits above judge/ (LLM inference) and stacks its outputs with the text model and calibrator."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.arena_csv import ArenaDataset, Pair, write_submission
from shared.settings import Settings
from shared.storage import is_text_predictor, public_path
from workers.judge.engines import EngineConfig, JudgeEngine, load_engine, load_tokenizer, resolve_dtype
from workers.judge.prompts import JudgePromptBuilder
from workers.judge.votes import JudgeResult, judge_pairs
from workers.stacking.calibration import Calibrator, fit_calibrator

log = logging.getLogger(__name__)
# Pairs the text model embeds between progress reports: ~1 s each on 2 CPU cores.
TEXT_CHUNK_PAIRS = 128
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
    ):
        self.engine = engine
        self.prompt_builder = prompt_builder
        self.chunk_pairs = chunk_pairs
        self.description = description
        self.classifier = classifier
        self.classifier_builder = classifier_builder
        self.text_model = text_model
        self.text_encoder = text_encoder

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
            with_votes: with a classifier adapter, also cast the base model's criterion votes.
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
        text_model, text_encoder = _open_text_model(settings, predictor_dir)
        return cls(
            None,
            None,
            chunk_pairs=TEXT_CHUNK_PAIRS,
            description={
                "predictor": predictor_dir.name,
                "kind": "text model",
                "encoder": text_model.encoder,
                "criterion_votes": False,
            },
            text_model=text_model,
            text_encoder=text_encoder,
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
            result.text_logprobs = self._text_logprobs(pairs, on_progress=on_progress if only_text else None)
        result.seconds = time.perf_counter() - started
        return result

    def _text_logprobs(self, pairs: Sequence[Pair], *, on_progress: ProgressCallback | None) -> np.ndarray:
        """The text model's (n, 3) log-probabilities, in chunks so a long job reports progress."""
        from workers.stacking.text_model import embed_pairs

        step = len(pairs) if on_progress is None else TEXT_CHUNK_PAIRS
        parts = []
        for start in range(0, len(pairs), max(step, 1)):
            chunk = pairs[start : start + step]
            parts.append(self.text_model.log_probabilities(chunk, embed_pairs(chunk, self.text_encoder)))
            if on_progress is not None:
                on_progress(start + len(chunk), len(pairs))
        return np.vstack(parts) if parts else np.zeros((0, 3))

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
    from workers.stacking.text_model import TextEncoder, TextModel

    path = Path(adapter_dir) / TEXT_MODEL_NAME
    if not path.is_file():
        return None, None
    text_model = TextModel.load(path)
    return text_model, TextEncoder(text_encoder_dir(settings, text_model.encoder))


def text_encoder_dir(settings: Settings, encoder_name: str) -> str:
    """The encoder folder a text model reads: TEXT_ENCODER_PATH when set, else models/<the encoder it names>."""
    if settings.TEXT_ENCODER_PATH:
        return settings.TEXT_ENCODER_PATH
    named = settings.models_dir / encoder_name
    return str(named) if (named / "config.json").is_file() else settings.text_encoder_path


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


def predict_dataset(
    dataset: ArenaDataset,
    judge: Judge,
    *,
    calibrator: Calibrator | None = None,
    tta: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Prediction:
    """Judge every pair; calibrated probabilities when a calibrator is given, else the raw softmax."""
    if calibrator is not None:
        calibrator.check_inputs(
            np.zeros((0, 2 if tta else 1, 1, 4)) if judge.engine is not None else None,
            np.zeros((0, 2 if tta else 1, 3)) if judge.classifier is not None else None,
            text_expected=judge.text_model is not None,
        )  # fail before spending minutes on judging
    result = judge.judge(dataset.pairs, tta=tta, on_progress=on_progress)
    probabilities = calibrated_probabilities(result, dataset.pairs, calibrator)
    return Prediction(probabilities=probabilities, judge_result=result, calibrated=calibrator is not None)


def calibrated_probabilities(result: JudgeResult, pairs: Sequence[Pair], calibrator: Calibrator | None) -> np.ndarray:
    """The calibrator applied to whatever the judge produced (votes and/or classifier logits); raw without one."""
    if calibrator is None:
        return result.raw_probabilities
    return calibrator.predict(
        result.vote_logprobs, pairs, adapter_logits=result.adapter_logits, text_logprobs=result.text_logprobs
    )


def write_prediction(path: Path, dataset: ArenaDataset, prediction: Prediction, *, floor: float) -> Path:
    return write_submission(path, dataset.ids, prediction.probabilities, floor=floor)


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
