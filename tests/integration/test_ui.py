"""The results page (/ui) in a real browser against the real stack: headless Chromium (tests/integration/browser.py)
opens the page through the reverse proxy (nginx with the project's config, its default limits) in front of a real
gateway process, with a real Celery worker judging a labelled dataset with model names in slow chunks.

It checks what a person sees: a wrong key is refused, the right one opens the list, the job appears and its
progress moves, its report shows the log loss, the per-source table, the confusion matrix, the leaderboard and
images that load, and a download gives the job's file. No URL the browser requested holds the key, no log does
either, and the console shows no error (a CSP violation would be one). Screenshots go to var/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from tests.api.arena_rows import LABELS, PROMPTS
from tests.api.conftest import API_KEY
from tests.integration.browser import Browser
from tests.integration.conftest import DEFAULT_PREDICTOR, make_stack
from tests.integration.nginx import free_port, nginx_binary, stop, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
ROWS = 16
CHUNK_ROWS = 2  # 8 chunks of at least CHUNK_DELAY_S each: progress a person can watch move
# The page polls every 1.5 s; 2 s a chunk leaves it several looks at a job half done however fast the machine.
CHUNK_DELAY_S = 2
MODELS = [("alpaca-7b", "vicuna-13b"), ("vicuna-13b", "llama-2-70b"), ("llama-2-70b", "alpaca-7b")]
SOURCES = ["forum", "benchmark"]


def arena_csv_with_models(rows: int) -> bytes:
    """Labelled rows with model names and a source column: every part of the report has something to show."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b", *LABELS, "source"])
    for index in range(rows):
        prompt, response_a, response_b = PROMPTS[index % len(PROMPTS)]
        model_a, model_b = MODELS[index % len(MODELS)]
        label = [0, 0, 0]
        label[index % 4 % 3] = 1  # A wins more often than B or a tie
        writer.writerow(
            [2000 + index, model_a, model_b, json.dumps([prompt]), json.dumps([response_a]), json.dumps([response_b]),
             *label, SOURCES[index % 2]]
        )  # fmt: skip
    return buffer.getvalue().encode()


class Served:
    """The stack (worker + REST client), and the page's address behind the proxy, with both access logs."""

    def __init__(self, stack, url: str, gateway_log: Path, proxy_log: Path) -> None:
        self.stack, self.url, self.gateway_log, self.proxy_log = stack, url, gateway_log, proxy_log


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not (DEFAULT_PREDICTOR / "text_model.json").is_file():
        pytest.fail(f"the default predictor is missing at {DEFAULT_PREDICTOR}; run `make setup`")
    stack = make_stack(
        tmp_path_factory, engine="transformers", worker_env={"CHUNK_EXTRA_DELAY_S": str(CHUNK_DELAY_S)},
        gateway_settings={"PREDICT_CHUNK_ROWS": CHUNK_ROWS},
    )  # fmt: skip
    processes: list[subprocess.Popen] = []
    try:
        stack.start_worker("cpu")
        settings = stack.settings
        gateway_port, gateway_log = free_port(), stack.root / "gateway.log"
        env = {
            **os.environ, "PYTHONPATH": str(REPO_ROOT), "API_KEY": API_KEY, "SHARED_DIR": str(settings.SHARED_DIR),
            "REDIS_URL": settings.REDIS_URL, "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "INSPECT_TIMEOUT_S": "0.5",
            "PREDICT_CHUNK_ROWS": str(CHUNK_ROWS),
        }  # fmt: skip
        command = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(gateway_port)]
        with open(gateway_log, "wb") as log:
            processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for_port(gateway_port, processes[-1], gateway_log)

        # The proxy `make up` and compose run, from the same template, with its default limits.
        state_dir = tempfile.mkdtemp(prefix="arena-ui-proxy-")
        os.chmod(state_dir, 0o755)  # nginx's workers run as nobody when the test runs as root
        proxy_port, proxy_log = free_port(), Path(state_dir) / "nginx.log"
        proxy_env = {
            **os.environ, "PROXY_LISTEN": f"127.0.0.1:{proxy_port}", "PROXY_UPSTREAM": f"127.0.0.1:{gateway_port}",
            "PROXY_STATE_DIR": state_dir,
        }  # fmt: skip
        rendered = subprocess.run(
            ["bash", str(REPO_ROOT / "compose" / "proxy-conf.sh")], env=proxy_env, capture_output=True, text=True
        )
        assert rendered.returncode == 0, rendered.stderr
        conf = Path(state_dir) / "nginx.conf"
        conf.write_text(rendered.stdout)
        command = [nginx_binary(), "-p", state_dir, "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
        with open(proxy_log, "wb") as log:
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        wait_for_port(proxy_port, processes[-1], proxy_log)
        yield Served(stack, f"http://127.0.0.1:{proxy_port}/ui", gateway_log, proxy_log)
    finally:
        for process in reversed(processes):
            stop(process)
        stack.stop()


@pytest.fixture
def browser():
    browser = Browser(width=1280, height=900)
    yield browser
    browser.close()


def test_a_person_follows_a_job_to_its_report_in_a_real_browser(served, browser, tmp_path):
    stack = served.stack
    started = time.monotonic()
    browser.open(served.url)
    browser.wait_for("!document.querySelector('#key-view').hidden")
    browser.type_into("#api-key", "not-the-key")
    browser.click("#key-form button")
    assert "refused" in browser.wait_for("document.querySelector('#key-error').textContent")
    browser.type_into("#api-key", API_KEY)
    browser.click("#key-form button")
    browser.wait_for("!document.querySelector('#list-view').hidden")

    # A client submits a job over REST; the open page shows it and its progress moving.
    dataset = stack.upload(arena_csv_with_models(ROWS), name="arena-with-models.csv")
    response = stack.client.post("/v1/jobs/predict", json={"dataset": dataset["id"]})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    browser.wait_for(f"document.querySelector('tr[data-job=\"{job_id}\"]') !== null", timeout=15)
    earlier = browser.wait_for(
        f"(() => {{ const value = document.querySelector('tr[data-job=\"{job_id}\"] progress').value;"
        f" return value > 0 && value < {ROWS} ? value : 0; }})()",
        timeout=120,
    )
    list_shot = browser.screenshot(SCREENSHOTS / "ui-jobs.png")
    later = browser.wait_for(
        f"(() => {{ const value = document.querySelector('tr[data-job=\"{job_id}\"] progress').value;"
        f" return value > {earlier} ? value : 0; }})()",
        timeout=60,
    )
    assert later > earlier
    # Side tables refresh every sixth poll (~10 s): checked after the progress, which a fast machine finishes soon.
    assert browser.wait_for(f"document.querySelector('#datasets').innerText.includes('{dataset['id'][:8]}')")

    # The report, opened from the list like a person would, while the job still runs.
    browser.click(f'tr[data-job="{job_id}"] a')
    browser.wait_for(f"location.hash === '#/jobs/{job_id}' && !document.querySelector('#job-view').hidden")
    assert browser.wait_for("document.querySelectorAll('#chunks tbody tr').length") == ROWS // CHUNK_ROWS
    browser.wait_for("document.querySelector('#job-summary').innerText.includes('succeeded')", timeout=120)
    job = stack.client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    result = job["result"]

    shown_log_loss = browser.wait_for("document.querySelector('[data-metric=\"log_loss\"] .card-value')?.innerText")
    assert shown_log_loss == f"{result['log_loss']:.4f}"
    assert browser.text('[data-metric="accuracy"] .card-value') == f"{result['accuracy']:.4f}"
    per_source = browser.text("#job-per-source tbody")
    assert all(source in per_source for source in SOURCES) and not browser.evaluate(
        "document.querySelector('#job-per-source').hidden"
    )
    confusion = browser.evaluate(
        "[...document.querySelectorAll('#job-confusion tbody td')].map((cell) => Number(cell.innerText))"
    )
    assert sum(confusion) == ROWS
    assert confusion == [cell for counts in result["confusion_matrix"]["counts"] for cell in counts]
    workers = browser.text("#job-workers tbody")
    assert all(worker in workers for worker in result["workers"])

    # Every image the job wrote is on the page and loaded; the leaderboard is a table of its models.
    images = sorted(name for name in job["artifacts"] if name.endswith(".png"))
    assert "reliability.png" in images and "leaderboard.png" in images, job["artifacts"]
    loaded = browser.wait_for(
        "(() => { const images = [...document.querySelectorAll('#job-view img')];"
        " return images.every((image) => image.complete && image.naturalWidth > 0)"
        " ? images.map((image) => image.dataset.artifact).sort() : null; })()",
        timeout=30,
    )
    assert loaded == images
    board = browser.evaluate(
        "[...document.querySelectorAll('table[data-artifact=\"leaderboard.csv\"] tbody tr')]"
        ".map((tr) => tr.children[1].innerText)"
    )
    assert sorted(board) == sorted({model for pair in MODELS for model in pair})
    assert browser.evaluate("document.querySelectorAll('#downloads button').length") == len(job["artifacts"])
    report_shot = browser.screenshot(SCREENSHOTS / "ui-report.png")

    # A download is the job's own file, fetched with the key in a header and handed over as a blob.
    downloads = tmp_path / "downloads"
    browser.allow_downloads(downloads)
    browser.click('#downloads button[data-artifact="submission.csv"]')
    deadline = time.monotonic() + 15
    while not (downloads / "submission.csv").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    expected = stack.client.get(f"/v1/jobs/{job_id}/artifacts/submission.csv").content
    assert (downloads / "submission.csv").read_bytes() == expected

    # The key was never in a URL, nor in the proxy's or the gateway's log, and the page showed no error.
    entries = browser.evaluate("performance.getEntries().map((entry) => entry.name)")
    browser.evaluate("1")  # every event so far recorded
    requested = browser.requested_urls + entries
    assert any("/v1/jobs/" in url for url in requested) and any(url.endswith("/ui/app.js") for url in requested)
    assert not [url for url in requested if API_KEY in url]
    assert browser.evaluate("document.cookie") == "" and browser.evaluate("localStorage.length") == 0
    proxy_log = served.proxy_log.read_text(errors="replace")
    assert API_KEY not in proxy_log and API_KEY not in served.gateway_log.read_text(errors="replace")
    for path in ("/ui", "/ui/app.js", "/ui/style.css", f"/v1/jobs/{job_id}"):
        assert f'"GET {path} HTTP/1.1" 200' in proxy_log, path  # through the proxy, within its limits
    errors = [error for error in browser.console_errors if "status of 401" not in error]
    assert errors == [] and len(browser.console_errors) == 1  # the one 401: the wrong key typed first

    # Forgetting the key leaves the page with nothing but the key form.
    browser.click("#forget-key")
    browser.wait_for("!document.querySelector('#key-view').hidden")
    assert browser.evaluate("sessionStorage.length") == 0
    print(f"\nscreenshots: {list_shot} {report_shot} ({time.monotonic() - started:.1f} s in the browser)")
