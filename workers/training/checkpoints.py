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


def save_checkpoint(model, optimizer, scheduler, output_dir: Path, state: dict) -> None:
    import torch

    folder = output_dir / CHECKPOINTS_DIR / f"step-{state['step']:06d}"
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, staging / "optim.pt")
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
