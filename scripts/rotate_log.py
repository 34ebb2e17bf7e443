"""Copy stdin to a log file, rotated by size: `make up`'s processes write their output through this.

    some-command 2>&1 | python scripts/rotate_log.py RUN_DIR/NAME.log

Past STACK_LOG_MAX_MB (default 10) the file becomes NAME.log.1 (NAME.log.1 becomes .2, …) and a new one starts;
STACK_LOG_FILES (default 5) old files are kept, so a log takes at most (1 + STACK_LOG_FILES) × STACK_LOG_MAX_MB.
Lines are written as they come (tail -f works). TERM and INT are ignored: `make down` stops the whole session, and
this process ends when the command's output closes, so the command's last lines are still written.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def rotate(path: Path, backups: int) -> None:
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    if backups > 0:
        os.replace(path, path.with_name(f"{path.name}.1"))
    else:
        path.unlink()


def copy(source, path: Path, *, max_bytes: int, backups: int) -> None:
    handle = open(path, "ab")
    size = handle.tell()
    try:
        for line in source:
            if size and size + len(line) > max_bytes:
                handle.close()
                rotate(path, backups)
                handle = open(path, "ab")
                size = 0
            handle.write(line)
            handle.flush()
            size += len(line)
    finally:
        handle.close()


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: rotate_log.py LOG_FILE (reads stdin)")
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)
    max_bytes = int(float(os.environ.get("STACK_LOG_MAX_MB", "10")) * 1024 * 1024)
    backups = int(os.environ.get("STACK_LOG_FILES", "5"))
    if max_bytes < 1024 or backups < 0:
        sys.exit("rotate_log.py: STACK_LOG_MAX_MB must be at least 0.001 and STACK_LOG_FILES at least 0")
    copy(sys.stdin.buffer, Path(sys.argv[1]), max_bytes=max_bytes, backups=backups)


if __name__ == "__main__":
    main()
