"""Files of a run in progress: resumable checkpoints, the best validated adapter, folders published whole."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np

from shared.artifacts import CHECKPOINTS_DIR, TRAINER_STATE_NAME


def publish_dir(staging: Path, final: Path) -> None:
    """Replace `final` with the finished `staging` folder (the old one is removed only after the rename)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_adapter(model, folder: Path, extra: dict[str, object]) -> None:
    """PEFT adapter plus extra files (JSON dicts or numpy arrays), written to a staging folder, then renamed."""
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        for name, value in extra.items():
            if isinstance(value, np.ndarray):
                np.save(staging / name, value)
            else:
                (staging / name).write_text(json.dumps(value, indent=1, default=str))
        publish_dir(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def latest_checkpoint(output_dir: Path) -> Path | None:
    folders = sorted((output_dir / CHECKPOINTS_DIR).glob("step-*/" + TRAINER_STATE_NAME))
    return folders[-1].parent if folders else None


def capture_rng_state(device: str) -> dict:
    """The random generators a resumed run must continue: the CPU's always, every CUDA device's when on CUDA.

    CUDA draws its own numbers (LoRA dropout on the GPU); without its state a resumed run would repeat or skip
    masks and no longer match an uninterrupted one.
    """
    import torch

    state: dict = {"torch_rng": torch.get_rng_state().tolist()}
    if device.startswith("cuda"):
        state["cuda_rng"] = [device_state.tolist() for device_state in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict, device: str) -> None:
    """Put back what `capture_rng_state` saved (a CUDA state only on CUDA, for the devices this host has)."""
    import torch

    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    if device.startswith("cuda") and state.get("cuda_rng"):
        states = [torch.tensor(saved, dtype=torch.uint8) for saved in state["cuda_rng"]]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


def save_checkpoint(model, optimizer, scheduler, output_dir: Path, state: dict, *, scaler=None) -> None:
    import torch

    folder = output_dir / CHECKPOINTS_DIR / f"step-{state['step']:06d}"
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        optim_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if scaler is not None:
            optim_state["scaler"] = scaler.state_dict()
        torch.save(optim_state, staging / "optim.pt")
        (staging / TRAINER_STATE_NAME).write_text(json.dumps(state, indent=1, default=str))  # last: marks it complete
        publish_dir(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for older in sorted((output_dir / CHECKPOINTS_DIR).glob("step-*")):
        if older != folder:
            shutil.rmtree(older, ignore_errors=True)


def load_adapter_weights(model, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    device = str(next(model.parameters()).device)
    set_peft_model_state_dict(model, load_peft_weights(str(folder), device=device))
