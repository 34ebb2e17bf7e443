"""The processes below a process, read from /proc (Linux): what a hard stop kills and what a benchmark weighs."""

from __future__ import annotations

from pathlib import Path


def descendants(root: int) -> list[int]:
    """Every process below `root` (children, their children, ...), from each process's parent id in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or not a process
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
