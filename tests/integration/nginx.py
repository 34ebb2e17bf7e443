"""What the proxy tests share: nginx itself (required: `make setup` installs it), free ports, and the processes
they start (a gateway, nginx): waiting for one to listen, stopping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        pytest.fail(
            "nginx is not installed: run `make setup` (as root it installs nginx-light), or apt-get install -y"
            " nginx-light"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until something listens on `port`; fails with the log's tail when `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on {port} after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """TERM, then KILL what still runs 10 s later."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def gateway_behind_proxy(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A real gateway process (uvicorn, `env` on top of this process's environment: SHARED_DIR, REDIS_URL, API_KEY,
    ...) behind nginx with the project's config (compose/proxy-conf.sh, its default limits), as `make up` runs them;
    yields the proxy's base URL, and stops both afterwards. Their output: `log_dir`/gateway.log and nginx.log."""
    repo_root = Path(__file__).resolve().parents[2]
    processes: list[subprocess.Popen] = []
    try:
        gateway_port, gateway_log = free_port(), log_dir / "gateway.log"
        command = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(gateway_port)]
        with open(gateway_log, "wb") as log:
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=repo_root,
                    env={**os.environ, "PYTHONPATH": str(repo_root), **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
        wait_for_port(gateway_port, processes[-1], gateway_log)
        state_dir = tempfile.mkdtemp(prefix="arena-proxy-")
        os.chmod(state_dir, 0o755)  # nginx's workers run as nobody when the test runs as root
        proxy_port, proxy_log = free_port(), log_dir / "nginx.log"
        proxy_env = {
            **os.environ, "PROXY_LISTEN": f"127.0.0.1:{proxy_port}", "PROXY_UPSTREAM": f"127.0.0.1:{gateway_port}",
            "PROXY_STATE_DIR": state_dir,
        }  # fmt: skip
        rendered = subprocess.run(
            ["bash", str(repo_root / "compose" / "proxy-conf.sh")], env=proxy_env, capture_output=True, text=True
        )
        assert rendered.returncode == 0, rendered.stderr
        conf = Path(state_dir) / "nginx.conf"
        conf.write_text(rendered.stdout)
        command = [nginx_binary(), "-p", state_dir, "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
        with open(proxy_log, "wb") as log:
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        wait_for_port(proxy_port, processes[-1], proxy_log)
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        for process in reversed(processes):
            stop(process)
