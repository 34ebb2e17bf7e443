"""The processes below a process, read from /proc (Linux): what a hard stop kills and what a benchmark weighs."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first, then the parent id, ...)."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def is_zombie(pid: int) -> bool:
    """Whether `pid` is a process that has exited and waits for its parent to reap it: signal 0 still reaches it,
    but it runs nothing. False when it is gone or /proc cannot say."""
    try:
        return _stat_fields(pid)[0] == "Z"
    except (OSError, IndexError):
        return False


def descendants(root: int) -> list[int]:
    """Every process below `root` (children, their children, ...), from each process's parent id in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or not a process
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
