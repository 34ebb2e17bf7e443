"""shared/process_tree.py: the processes below a process, as the watchdog's hard stop and bench_api see them."""

import os
import subprocess
import sys
import time

from shared.process_tree import descendants


def test_descendants_finds_children_and_grandchildren_only():
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']);" \
        " time.sleep(30)"  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        found = descendants(os.getpid())
        while len([pid for pid in found if pid != child.pid]) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            found = descendants(os.getpid())
        assert child.pid in found
        grandchildren = descendants(child.pid)
        assert len(grandchildren) == 1 and grandchildren[0] in found
        assert os.getpid() not in found
    finally:
        for pid in descendants(child.pid):
            os.kill(pid, 9)
        child.kill()
        child.wait()
