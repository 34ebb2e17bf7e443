"""scripts/rotate_log.py: `make up`'s process logs are rotated by size, a bounded number kept, every line written."""

from __future__ import annotations

import os
import subprocess
import sys

from shared.settings import REPO_ROOT

ROTATE = REPO_ROOT / "scripts" / "rotate_log.py"


def test_a_log_past_its_cap_is_rotated_and_old_files_beyond_the_count_are_dropped(tmp_path):
    log = tmp_path / "worker.log"
    lines = b"".join(b"line %06d %s\n" % (index, b"x" * 40) for index in range(60_000))  # ~3.2 MB
    env = {**os.environ, "STACK_LOG_MAX_MB": "0.5", "STACK_LOG_FILES": "2"}
    subprocess.run([sys.executable, str(ROTATE), str(log)], input=lines, env=env, check=True)
    files = sorted(tmp_path.iterdir())
    assert [path.name for path in files] == ["worker.log", "worker.log.1", "worker.log.2"]
    assert all(path.stat().st_size <= 512 * 1024 for path in files)
    kept = b"".join(path.read_bytes() for path in (files[2], files[1], files[0]))
    assert lines.endswith(kept) and kept.endswith(b"line 059999 " + b"x" * 40 + b"\n")  # the newest, whole lines


def test_it_appends_to_an_existing_log_and_rotates_when_that_is_full(tmp_path):
    log = tmp_path / "api.log"
    log.write_bytes(b"a" * 2000 + b"\n")
    env = {**os.environ, "STACK_LOG_MAX_MB": "0.001", "STACK_LOG_FILES": "1"}
    subprocess.run([sys.executable, str(ROTATE), str(log)], input=b"next\n", env=env, check=True)
    assert log.read_bytes() == b"next\n" and (tmp_path / "api.log.1").read_bytes() == b"a" * 2000 + b"\n"
