"""Checkpoints are loaded with torch.load(weights_only=True): a file on shared storage never runs code."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from shared.settings import REPO_ROOT

torch = pytest.importorskip("torch")


def test_every_torch_load_in_workers_is_weights_only():
    calls = []
    for path in sorted((REPO_ROOT / "workers").rglob("*.py")):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            end = text.index(")", match.end())
            calls.append((path.relative_to(REPO_ROOT), text[match.start() : end + 1]))
    assert calls, "no torch.load found: update this test if checkpoints are loaded another way"
    unsafe = [call for call in calls if "weights_only=True" not in call[1]]
    assert not unsafe, f"torch.load without weights_only=True unpickles arbitrary objects: {unsafe}"


def test_the_optimizer_checkpoint_loads_with_weights_only(tmp_path):
    from workers.training.model import build_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    model.register_module("score", torch.nn.Linear(3, 3))
    config = SimpleNamespace(learning_rate=1e-3, head_learning_rate=1e-2, weight_decay=0.01, warmup_fraction=0.1)
    optimizer, scheduler = build_optimizer(model, config, total_steps=10)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "optim.pt")

    loaded = torch.load(tmp_path / "optim.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(loaded["scheduler"])
    assert scheduler.last_epoch == 1


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran while loading a checkpoint",))

    torch.save({"optimizer": Payload()}, tmp_path / "optim.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(tmp_path / "optim.pt", weights_only=True, map_location="cpu")
