"""Train a LoRA judge: the base causal LM + PEFT LoRA + a 3-way (A, B, tie) head, on labelled arena CSVs.

The model reads exactly the discriminator's prompt (workers/judge/classifier.py): the shared conversation
prefix of `JudgePromptBuilder`, then one overall question. Each pair is trained in both orders (A/B swapped,
label swapped), with soft-label cross-entropy weighted per source. A validation split grouped by prompt
early-stops training on the log loss of the two orders' averaged prediction (what `arena predict` computes).

CPU budget (2 cores): fp32 master weights under bf16 autocast, sequences bucketed by length, gradient
accumulation, and optionally LoRA on the top layers only (`lora_top_layers`): no trainable parameter below
them means no backward pass through them, which roughly halves the cost of a step.

Output folder (`adapters/<name>/`): adapter_config.json + adapter_model.safetensors (PEFT, loadable with
`PeftModel.from_pretrained` on `AutoModelForSequenceClassification(num_labels=3)`), the tokenizer files,
judge_settings.json (prompt settings), calibration.json (multinomial LR over the adapter's log-probabilities
of both orders + length features, fitted on the validation split), metrics.json and learning_curve.png.
A restarted run with the same output folder resumes from its last checkpoint (checkpoints/step-NNNNNN/);
a folder that holds metrics.json is finished and is returned as is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.artifacts import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CURVE_NAME,
    JUDGE_SETTINGS_NAME,
    METRICS_NAME,
    TRAINER_STATE_NAME,
    VALIDATION_LOGITS_NAME,
)
from shared.storage import atomic_write_text, atomic_writer
from workers.judge.classifier import ClassifierSettings, classifier_prompt_builder, padding_token_id
from workers.judge.engines import check_model_dir, load_tokenizer
from workers.judge.outcomes import unswap_classes
from workers.training.checkpoints import (
    capture_rng_state,
    latest_checkpoint,
    load_adapter_weights,
    restore_rng_state,
    save_adapter,
    save_checkpoint,
)
from workers.training.config import TrainConfig, TrainingError, TrainProgress
from workers.training.data import epoch_batches, rows_digest, split_rows, tokenize
from workers.training.model import (
    build_model,
    build_optimizer,
    evaluate_rows,
    make_grad_scaler,
    optimizer_step,
    resolve_device,
    score_logits,
)
from workers.training.precision import check_batch_tokens, model_batch_token_cap, plan_training, probe_capabilities
from workers.training.report import count_values, peak_rss_mb, per_epoch, plot_learning_curve
from workers.training.stack import check_text_encoder, fit_stack

log = logging.getLogger(__name__)


def train_judge(config: TrainConfig, *, on_progress: Callable[[TrainProgress], None] | None = None) -> dict:
    """Train (or resume, or return the finished result of) a LoRA classifier judge.

    Args:
        config: data, model, LoRA and schedule settings; `config.output_dir` receives every artefact.
        on_progress: called after every optimizer step; raising from it stops training (the last checkpoint
            stays, so a rerun resumes).

    Returns:
        The metrics written to metrics.json.

    Raises:
        TrainingError: bad settings or data (the message says what to change).
        DataFormatError: an input CSV is not a labelled Kaggle arena file.
        ModelNotFoundError: the base model folder does not exist.
    """
    return Trainer(config, on_progress=on_progress).run()


class Trainer:
    """One training run: data, schedule, model, the step loop with validation, early stopping, time budget and
    checkpoints, then the published adapter. `run()` reads top to bottom; each step of it is one short method."""

    def __init__(self, config: TrainConfig, *, on_progress: Callable[[TrainProgress], None] | None = None):
        self.config = config
        self.on_progress = on_progress
        self.output_dir = Path(config.output_dir)
        self.best_dir = self.output_dir / CHECKPOINTS_DIR / BEST_DIR

    def run(self) -> dict:
        if (self.output_dir / METRICS_NAME).is_file():
            log.info("%s is finished already; returning its metrics", self.output_dir)
            return json.loads((self.output_dir / METRICS_NAME).read_text())
        self.started = time.perf_counter()
        self._check_settings()
        self._prepare_data()
        self._plan_schedule()
        self._build_model()
        self._resume()
        self._train()
        return self._publish()

    # --- before the first step ---------------------------------------------------------------------------------

    def _check_settings(self) -> None:
        import torch

        config = self.config
        check_model_dir(config.base_model)
        if config.batch_size < 1 or config.grad_accum < 1:
            raise TrainingError("--batch-size and --grad-accum must be at least 1")
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.plan = plan_training(
            probe_capabilities(self.device),
            quantization=config.quantization,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        check_text_encoder(config.text_encoder)

    def _prepare_data(self) -> None:
        """Rows split into training and validation, tokenized; every training row in both orders."""
        config = self.config
        self.train_rows, self.val_rows = split_rows(config)
        self.tokenizer = load_tokenizer(config.base_model)
        self.pad_token_id = padding_token_id(self.tokenizer)
        try:
            builder = classifier_prompt_builder(self.tokenizer, max_length=config.max_length)
        except ValueError as exc:
            raise TrainingError(f"--max-length {config.max_length}: {exc}") from None
        tokenize(self.train_rows, builder)
        tokenize(self.val_rows, builder)
        # Both orders of every training row; the label swaps with the responses.
        self.sequences = [ids for pair_ids in self.train_rows.sequences for ids in pair_ids]
        self.targets = np.repeat(self.train_rows.labels, 2, axis=0)
        self.targets[1::2] = unswap_classes(self.targets[1::2])
        self.weights = np.repeat(self.train_rows.weights, 2)
        self.lengths = [len(ids) for ids in self.sequences]

    def _plan_schedule(self) -> None:
        config = self.config
        micro_per_epoch = math.ceil(len(self.sequences) / config.batch_size)
        self.steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.grad_accum))
        self.planned_steps = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        self.total_steps = self.planned_steps if config.max_steps is None else min(self.planned_steps, config.max_steps)
        self.eval_every = config.eval_every or max(1, self.steps_per_epoch // 4)
        log.info(
            "training on %d rows (%d examples), validating on %d rows; %d steps (%d per epoch)",
            len(self.train_rows.pairs),
            len(self.sequences),
            len(self.val_rows.pairs),
            self.total_steps,
            self.steps_per_epoch,
        )

    def _build_model(self) -> None:
        self.model = build_model(self.config, pad_token_id=self.pad_token_id, device=self.device, plan=self.plan)
        self.optimizer, self.scheduler = build_optimizer(self.model, self.config, self.total_steps)
        self.scaler = make_grad_scaler(self.plan)
        self.batch_token_cap = self._check_device_memory()
        self.step, self.resumed_from = 0, None
        self.history: dict = {"train": [], "val": []}
        self.best: dict = {"log_loss": None, "step": None}

    def _check_device_memory(self) -> int | None:
        """On CUDA, the most batch tokens the free memory holds (refusing a batch above it); None on a CPU.

        On a CPU the gateway's TRAIN_MAX_BATCH_TOKENS is the cap, checked before the job is queued.
        """
        if not self.device.startswith("cuda"):
            return None
        import torch

        free_bytes, _ = torch.cuda.mem_get_info(self.device)
        cap = model_batch_token_cap(self.model.config, plan=self.plan, free_bytes=free_bytes)
        batch_tokens = self.config.batch_size * self.config.max_length
        check_batch_tokens(batch_tokens=batch_tokens, cap=cap, free_bytes=free_bytes, plan=self.plan)
        log.info(
            "GPU: %.1f GiB free after loading; up to %d batch tokens fit (%d asked)",
            free_bytes / 2**30,
            cap,
            batch_tokens,
        )
        torch.cuda.reset_peak_memory_stats(self.device)
        return cap

    def _cuda_memory_figures(self) -> dict:
        if not self.device.startswith("cuda"):
            return {}
        import torch

        return {"cuda_peak_allocated_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}

    def _resume(self) -> None:
        """Continue from the last checkpoint of the same configuration, when there is one."""
        import torch

        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is not None:
            state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
            if state.get("resume_key") != self.config.resume_key():
                raise TrainingError(
                    f"{self.output_dir} holds a checkpoint of a different training configuration; use a new"
                    f" --output-dir, or delete {self.output_dir / CHECKPOINTS_DIR} to start over"
                )
            load_adapter_weights(self.model, checkpoint)
            # weights_only: the file sits on shared storage; a full unpickle would run whatever code it carries.
            optim_state = torch.load(checkpoint / "optim.pt", weights_only=True, map_location=self.device)
            self.optimizer.load_state_dict(optim_state["optimizer"])
            self.scheduler.load_state_dict(optim_state["scheduler"])
            if self.scaler is not None and "scaler" in optim_state:
                self.scaler.load_state_dict(optim_state["scaler"])
            self.step = self.resumed_from = int(state["step"])
            self.history = state["history"]
            restore_rng_state(state, self.device)
            log.info("resuming %s from step %d", self.output_dir, self.step)
        if (self.best_dir / "best.json").is_file():
            self.best = json.loads((self.best_dir / "best.json").read_text())
        # With no validation rows there is nothing to early-stop on: the last step is the result.
        self.evals_without_gain = 0 if not self.history["val"] else _evals_since_best(self.history["val"], self.best)

    # --- the loop ----------------------------------------------------------------------------------------------

    def _train(self) -> None:
        self.model.train()
        self.window_losses: list[float] = []
        self.step_seconds: list[float] = []
        self.train_started = time.perf_counter()
        self.stop_reason = "schedule finished"
        while self.step < self.total_steps:
            for group in self._remaining_groups_of_epoch():
                group_loss = self._take_step(group)
                self._after_step(group_loss)
                if self.step >= self.total_steps:
                    break
        self.train_seconds = time.perf_counter() - self.train_started

    def _remaining_groups_of_epoch(self):
        """This epoch's batches not yet trained on, `grad_accum` at a time (one group per optimizer step)."""
        config = self.config
        epoch = self.step // self.steps_per_epoch
        batches = epoch_batches(self.lengths, batch_size=config.batch_size, seed=config.seed, epoch=epoch)
        first_micro = (self.step % self.steps_per_epoch) * config.grad_accum
        for group_start in range(first_micro, len(batches), config.grad_accum):
            yield batches[group_start : group_start + config.grad_accum]

    def _take_step(self, group: list[list[int]]) -> float:
        """One optimizer step over a group of batches (gradient accumulation); returns its mean loss."""
        step_started = time.perf_counter()
        group_loss = optimizer_step(
            self.model,
            self.optimizer,
            self.scheduler,
            [([self.sequences[index] for index in batch], self.targets[batch], self.weights[batch]) for batch in group],
            pad_token_id=self.pad_token_id,
            device=self.device,
            autocast_dtype=self.plan.autocast_dtype,
            scaler=self.scaler,
        )
        self.step += 1
        self.step_seconds.append(time.perf_counter() - step_started)
        self.window_losses.append(group_loss)
        self.history["train"].append([self.step, group_loss])
        return group_loss

    def _after_step(self, group_loss: float) -> None:
        """Validate when due, checkpoint, report progress, and decide whether to stop."""
        end_of_epoch = self.step % self.steps_per_epoch == 0
        out_of_time = self._out_of_time()
        finishing = self.step >= self.total_steps or out_of_time
        val_log_loss = None
        if self.val_rows.pairs and (self.step % self.eval_every == 0 or end_of_epoch or finishing):
            val_log_loss = self._validate()
            if self.config.time_budget_s is not None and not out_of_time:
                # A validation can take minutes on a CPU: when it used up the budget, stop on this validated
                # step instead of taking one more step only to validate again.
                out_of_time = self._out_of_time()
                finishing = finishing or out_of_time
        if self.step % self.config.checkpoint_every == 0 and not finishing:
            self._save_checkpoint()
        self._report(group_loss, val_log_loss)
        self._decide_stop(out_of_time)

    def _out_of_time(self) -> bool:
        budget = self.config.time_budget_s
        return budget is not None and time.perf_counter() - self.train_started > budget

    def _validate(self) -> float:
        """Validation figures of this step; the best state so far is kept in checkpoints/best/."""
        val_logits, figures = evaluate_rows(
            self.model,
            self.val_rows,
            pad_token_id=self.pad_token_id,
            batch_size=self.config.eval_batch_size,
            device=self.device,
        )
        val_log_loss = figures["log_loss"]
        self.history["val"].append(
            {
                "step": self.step,
                "epoch": round(self.step / self.steps_per_epoch, 3),
                "train_loss": float(np.mean(self.window_losses)),
                **figures,
            }
        )
        self.window_losses = []
        if self.best["log_loss"] is None or val_log_loss < self.best["log_loss"]:
            self.best = {"log_loss": val_log_loss, "step": self.step, **figures}
            save_adapter(self.model, self.best_dir, {"best.json": self.best, "val_logits.npy": val_logits})
            self.evals_without_gain = 0
        else:
            self.evals_without_gain += 1
        return val_log_loss

    def _save_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "resume_key": self.config.resume_key(),
            "history": self.history,
            **capture_rng_state(self.device),
        }
        save_checkpoint(self.model, self.optimizer, self.scheduler, self.output_dir, state, scaler=self.scaler)

    def _report(self, group_loss: float, val_log_loss: float | None) -> None:
        if self.on_progress is None:
            return
        self.on_progress(
            TrainProgress(
                step=self.step,
                total_steps=self.total_steps,
                epoch=round(self.step / self.steps_per_epoch, 3),
                train_loss=group_loss,
                val_log_loss=val_log_loss,
                best_val_log_loss=self.best["log_loss"],
                seconds_per_step=round(float(np.mean(self.step_seconds[-20:])), 3),
            )
        )

    def _decide_stop(self, out_of_time: bool) -> None:
        if out_of_time:
            self.stop_reason = f"time budget of {self.config.time_budget_s:.0f}s reached"
            self.total_steps = self.step
        elif self.evals_without_gain >= self.config.patience:
            self.stop_reason = f"early stop: no better validation log loss in {self.config.patience} evaluations"
            self.total_steps = self.step

    # --- after the last step -----------------------------------------------------------------------------------

    def _publish(self) -> dict:
        """The published adapter is the best validated state (or the last one when nothing was validated)."""
        val_logits = None
        if self.best["step"] is not None:
            load_adapter_weights(self.model, self.best_dir)
            val_logits = np.load(self.best_dir / "val_logits.npy")
        return publish_run(
            self.model,
            self.tokenizer,
            self.config,
            output_dir=self.output_dir,
            train_rows=self.train_rows,
            val_rows=self.val_rows,
            val_logits=val_logits,
            history=self.history,
            best=self.best,
            extra=self._run_figures(),
        )

    def _run_figures(self) -> dict:
        step_seconds = self.step_seconds
        return {
            "steps": self.step,
            "total_steps_planned": min(self.planned_steps, self.config.max_steps or 10**12),
            "steps_per_epoch": self.steps_per_epoch,
            "epochs_done": round(self.step / self.steps_per_epoch, 3),
            "stop_reason": self.stop_reason,
            "resumed_from_step": self.resumed_from,
            "train_seconds_this_run": round(self.train_seconds, 1),
            "seconds_per_step": round(float(np.mean(step_seconds)), 3) if step_seconds else None,
            "total_seconds_this_run": round(time.perf_counter() - self.started, 1),
            "peak_rss_mb": peak_rss_mb(),
            "device": self.device,
            "precision": self.plan.describe(),
            "batch_token_cap": self.batch_token_cap,
            **self._cuda_memory_figures(),
            "truncated_rows": {"train": self.train_rows.truncated, "validation": self.val_rows.truncated},
        }


def _evals_since_best(val_history: list[dict], best: dict) -> int:
    steps = [entry["step"] for entry in val_history]
    return len([step for step in steps if best["step"] is None or step > best["step"]])


def publish_run(
    model, tokenizer, config: TrainConfig, *, output_dir: Path, train_rows, val_rows, val_logits, history, best, extra
) -> dict:
    """Publish the adapter, tokenizer, prompt settings, calibrator, learning curve, then metrics.json (last)."""
    staging = output_dir.with_name(f".{output_dir.name}.publish-{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for path in staging.iterdir():
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ClassifierSettings(
        base_model=str(config.base_model), max_length=config.max_length, pad_token_id=padding_token_id(tokenizer)
    ).save(output_dir / JUDGE_SETTINGS_NAME)

    validation: dict = {"rows": len(val_rows.pairs)}
    calibration: dict = {"fitted": False}
    if val_logits is not None:
        validation.update(score_logits(val_logits, val_rows.labels, val_rows.sources))
        validation["best_step"] = best["step"]
        with atomic_writer(output_dir / VALIDATION_LOGITS_NAME, "wb") as handle:
            np.savez(
                handle,
                ids=np.array([pair.id for pair in val_rows.pairs]),
                logits=val_logits,
                train_digest=np.array(rows_digest(train_rows)),
            )
        calibration = fit_stack(val_logits, train_rows, val_rows, output_dir, config)
    plot_learning_curve(
        history, output_dir / CURVE_NAME, title=f"{output_dir.name}: LoRA judge on {Path(config.base_model).name}"
    )
    metrics = {
        "adapter": output_dir.name,
        "task_type": "SEQ_CLS",
        "base_model": str(config.base_model),
        "train_rows": len(train_rows.pairs),
        "train_examples": 2 * len(train_rows.pairs),
        "train_sources": count_values(train_rows.sources),
        "validation": validation,
        "calibration": calibration,
        "epochs": per_epoch(history, extra["steps_per_epoch"]),
        "history": history,
        "config": config.describe(),
        **extra,
    }
    atomic_write_text(output_dir / METRICS_NAME, json.dumps(metrics, indent=1, default=str))
    shutil.rmtree(output_dir / CHECKPOINTS_DIR, ignore_errors=True)
    return metrics
