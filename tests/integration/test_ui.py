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
import re
import time
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from tests.api.arena_rows import LABELS, PROMPTS
from tests.api.conftest import API_KEY
from tests.integration.browser import Browser
from tests.integration.conftest import DEFAULT_PREDICTOR, make_stack
from tests.integration.nginx import gateway_behind_proxy

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


CODE_SNIPPETS = (
    "SELECT user_id, COUNT(*) FROM orders o JOIN users u ON u.id = o.user_id GROUP BY user_id HAVING COUNT(*) > 5;",
    "for i in $(seq 1 10); do grep -c ERROR /var/log/app.$i.log >> counts.txt; done && sort -n counts.txt | tail -1",
)


def code_prompts_csv() -> bytes:
    """Two unlabelled rows whose prompts are code, nothing like the shipped data's questions."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "prompt", "response_a", "response_b"])
    for index, snippet in enumerate(CODE_SNIPPETS):
        writer.writerow([3000 + index, json.dumps([snippet]), json.dumps(["It counts rows."]), json.dumps(["No."])])
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
    try:
        stack.start_worker("cpu")
        settings = stack.settings
        env = {
            "API_KEY": API_KEY, "SHARED_DIR": str(settings.SHARED_DIR), "REDIS_URL": settings.REDIS_URL,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "INSPECT_TIMEOUT_S": "0.5",
            "PREDICT_CHUNK_ROWS": str(CHUNK_ROWS),
        }  # fmt: skip
        # The gateway behind the proxy `make up` and compose run, from the same template, with its default limits.
        with gateway_behind_proxy(env, stack.root) as base_url:
            yield Served(stack, f"{base_url}/ui", stack.root / "gateway.log", stack.root / "nginx.log")
    finally:
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
    # Everyday questions read like the shipped data (median nearest cosine ~0.55): no domain warning.
    assert result["domain_check"]["like_training"] is True, result["domain_check"]
    assert browser.evaluate("document.querySelector('#job-domain-warning').hidden") is True
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
    # Through the proxy, within its limits (its log leaves out the successful polls: the job and the lists).
    for path in ("/ui", "/ui/app.js", "/ui/style.css", f"/v1/jobs/{job_id}/artifacts/reliability.png"):
        assert f'"GET {path} HTTP/1.1" 200' in proxy_log, path
    errors = [error for error in browser.console_errors if "status of 401" not in error]
    assert errors == [] and len(browser.console_errors) == 1  # the one 401: the wrong key typed first

    # Code snippets are unlike it: that job's report shows the domain check's warning, its note in full.
    code = stack.upload(code_prompts_csv(), name="code.csv")
    response = stack.client.post("/v1/jobs/predict", json={"dataset": code["id"]})  # the default predictor
    assert response.status_code == 202, response.text
    unlike_id = response.json()["job_id"]
    check = stack.wait_finished(unlike_id, timeout=120)["result"]["domain_check"]
    assert check["like_training"] is False and "shrink" not in check, check  # under DOMAIN_SHRINK_MIN_ROWS
    browser.evaluate(f"location.hash = '#/jobs/{unlike_id}'")
    report_of(browser, unlike_id)
    browser.wait_for("!document.querySelector('#job-domain-warning').hidden")
    assert browser.text("#job-domain-warning") == f"Unlike the training data. {check['note']}"

    # Forgetting the key leaves the page with nothing but the key form.
    browser.click("#forget-key")
    browser.wait_for("!document.querySelector('#key-view').hidden")
    assert browser.evaluate("sessionStorage.length") == 0
    print(f"\nscreenshots: {list_shot} {report_shot} ({time.monotonic() - started:.1f} s in the browser)")


def job_state(stack, job_id: str) -> str | None:
    response = stack.client.get(f"/v1/jobs/{job_id}")
    return response.json()["state"] if response.status_code == 200 else None


def click_when_there(browser: Browser, selector: str) -> None:
    """Click once the element is on the page: a row appears at the list's next poll after the action that made it."""
    browser.wait_for(f"document.querySelector({json.dumps(selector)}) !== null")
    browser.click(selector)


def report_of(browser: Browser, job_id: str, *, timeout: float = 30) -> None:
    """Wait until the page shows this job's report, finished: the previous report stays in the (hidden) view until
    the hash change is handled, and it may say succeeded too."""
    browser.wait_for(
        f"location.hash === '#/jobs/{job_id}' && document.querySelector('#job-id').textContent === '{job_id}'"
        " && !document.querySelector('#job-view').hidden"
        " && document.querySelector('#job-summary').innerText.includes('succeeded')",
        timeout=timeout,
    )


def started_job_id(browser: Browser, kind: str) -> str:
    """The id of the job the page just started, from the link its message gives to the report."""
    href = browser.wait_for(
        f"(() => {{ const message = document.querySelector('#action-message');"
        f" return message.innerText.startsWith('Started {kind} job') ? message.querySelector('a')?.hash : null; }})()"
    )
    return href.removeprefix("#/jobs/")


def test_a_person_uploads_starts_cancels_and_deletes_from_the_page(served, browser, tmp_path):
    stack = served.stack
    started = time.monotonic()
    # An adapter folder as a finished train job leaves it (config + metrics; no weights: nothing predicts with it
    # here): the page offers it for predict jobs and deletes it. Training a real one would take minutes.
    adapter = stack.settings.SHARED_DIR / "adapters" / "page-adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    (adapter / "metrics.json").write_text(json.dumps({"validation": {"log_loss": 1.01, "rows": 12}}))
    browser.open(served.url)
    browser.wait_for("!document.querySelector('#key-view').hidden")
    browser.type_into("#api-key", API_KEY)
    browser.click("#key-form button")
    browser.wait_for("!document.querySelector('#list-view').hidden")

    # Upload through the file input: the progress bar fills, the page reports the rows and picks the new dataset.
    rows = 6
    csv_path = tmp_path / "from-the-page.csv"
    csv_path.write_bytes(arena_csv_with_models(rows))
    browser.choose_files("#upload-file", [csv_path])
    browser.click("#upload-button")
    assert (
        browser.wait_for(
            "document.querySelector('#upload-status').innerText.includes('rows')"
            " && document.querySelector('#upload-status').innerText"
        )
        == f"from-the-page.csv: {rows} rows, labelled"
    )
    assert browser.evaluate(
        "(() => { const bar = document.querySelector('#upload-progress'); return bar.value === bar.max; })()"
    )
    mine = [entry for entry in stack.client.get("/v1/datasets").json() if entry["name"] == "from-the-page.csv"]
    assert len(mine) == 1 and mine[0]["rows"] == rows and mine[0]["labelled"]
    dataset_id = mine[0]["id"]
    assert browser.wait_for(f"document.querySelector('#job-dataset').value === '{dataset_id}'")
    assert browser.wait_for(f"document.querySelector('tr[data-dataset=\"{dataset_id}\"]') !== null")

    # A predict job with the default predictor (adapters come from GET /v1/adapters; none chosen here).
    browser.select("#job-kind", "predict")
    adapters = browser.wait_for(
        "(() => { const names = [...document.querySelector('#job-adapter').options].map((option) => option.innerText);"
        " return names.length > 1 ? names : null; })()"
    )
    assert adapters == ["default predictor", "page-adapter (lora)"]
    browser.click("#job-submit")
    predict_id = started_job_id(browser, "predict")
    assert stack.client.get(f"/v1/jobs/{predict_id}").json()["params"]["dataset"] == dataset_id

    # The dataset is read by that job: its delete (armed, then confirmed) is refused and the page says why.
    click_when_there(browser, f'tr[data-dataset="{dataset_id}"] button[data-action="delete"]')
    browser.wait_for(
        f'document.querySelector(\'tr[data-dataset="{dataset_id}"] button[data-action="delete"]\')'
        ".innerText === 'really delete?'"
    )
    browser.screenshot(SCREENSHOTS / "ui-actions.png")
    browser.click(f'tr[data-dataset="{dataset_id}"] button[data-action="delete"]')
    refused = browser.wait_for(
        "document.querySelector('#action-message.error')?.innerText.includes('deleting dataset') "
        "&& document.querySelector('#action-message').innerText"
    )
    assert "409" in refused and "unfinished job" in refused, refused
    assert stack.client.get(f"/v1/datasets/{dataset_id}").status_code == 200

    # A bad text fit is the API's 422, shown with its detail; a good one starts, is cancelled, then deleted.
    browser.select("#job-kind", "text-fit")
    assert browser.evaluate("!document.querySelector('#job-adapter-name').hidden")
    browser.type_into("#job-adapter-name", "no spaces allowed")
    browser.click("#job-submit")
    invalid = browser.wait_for(
        "document.querySelector('#action-message.error')?.innerText.includes('not started')"
        " && document.querySelector('#action-message').innerText"
    )
    assert "422" in invalid and "adapter_name" in invalid, invalid
    browser.evaluate("document.querySelector('#job-adapter-name').value = ''")
    browser.type_into("#job-adapter-name", "from-the-page")
    browser.click("#job-submit")
    fit_id = started_job_id(browser, "train")
    fit = stack.client.get(f"/v1/jobs/{fit_id}").json()
    assert fit["params"]["text_only"] is True and fit["params"]["adapter_name"] == "from-the-page"
    click_when_there(browser, f'tr[data-job="{fit_id}"] button[data-action="cancel"]')
    browser.wait_for(f"document.querySelector('tr[data-job=\"{fit_id}\"]')?.dataset.state === 'cancelled'")
    assert job_state(stack, fit_id) == "cancelled"
    browser.click(f'tr[data-job="{fit_id}"] button[data-action="delete"]')
    assert job_state(stack, fit_id) == "cancelled"  # one click only arms the button
    browser.click(f'tr[data-job="{fit_id}"] button[data-action="delete"]')
    browser.wait_for(f"document.querySelector('tr[data-job=\"{fit_id}\"]') === null")
    assert job_state(stack, fit_id) is None

    # The predict job runs to the end; its report has the page's own cancel hidden and its log loss shown.
    click_when_there(browser, f'tr[data-job="{predict_id}"] a')
    report_of(browser, predict_id, timeout=120)
    assert browser.evaluate("document.querySelector('#job-cancel').hidden")
    assert browser.wait_for("document.querySelector('[data-metric=\"log_loss\"] .card-value')?.innerText")

    # A leaderboard of the human votes, started from the list, runs; deleted from its own report.
    browser.click("a.brand")
    browser.wait_for("!document.querySelector('#list-view').hidden")
    browser.select("#job-kind", "leaderboard")
    browser.select("#job-dataset", dataset_id)
    browser.click("#job-submit")
    board_id = started_job_id(browser, "leaderboard")
    assert stack.wait_finished(board_id, timeout=60)["state"] == "succeeded"
    click_when_there(browser, f'tr[data-job="{board_id}"] a')
    report_of(browser, board_id)
    browser.click("#job-delete")
    assert browser.text("#job-delete") == "really delete?" and job_state(stack, board_id) == "succeeded"
    browser.click("#job-delete")
    browser.wait_for("location.hash === '#/' && !document.querySelector('#list-view').hidden")
    assert job_state(stack, board_id) is None

    # With no job reading it, the dataset goes after its confirmation.
    browser.click(f'tr[data-dataset="{dataset_id}"] button[data-action="delete"]')
    browser.click(f'tr[data-dataset="{dataset_id}"] button[data-action="delete"]')
    browser.wait_for(f"document.querySelector('tr[data-dataset=\"{dataset_id}\"]') === null")
    assert stack.client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert "deleted" in browser.text("#action-message")

    # So does the adapter, after its confirmation; the predict form no longer offers it.
    browser.click('tr[data-adapter="page-adapter"] button[data-action="delete"]')
    browser.click('tr[data-adapter="page-adapter"] button[data-action="delete"]')
    browser.wait_for("document.querySelector('tr[data-adapter=\"page-adapter\"]') === null")
    assert stack.client.get("/v1/adapters/page-adapter").status_code == 404 and not adapter.exists()
    assert browser.evaluate("[...document.querySelector('#job-adapter').options].map((option) => option.value)") == [
        ""
    ] + [entry["name"] for entry in stack.client.get("/v1/adapters").json() if entry["complete"]]
    shot = browser.screenshot(SCREENSHOTS / "ui-actions-done.png")

    # The key was in no URL and no log; the console shows only the refusals the test asked for.
    browser.evaluate("1")
    requested = browser.requested_urls + browser.evaluate("performance.getEntries().map((entry) => entry.name)")
    assert any(url.endswith("/v1/datasets") for url in requested)
    assert not [url for url in requested if API_KEY in url]
    assert API_KEY not in served.proxy_log.read_text(errors="replace")
    assert API_KEY not in served.gateway_log.read_text(errors="replace")
    errors = [error for error in browser.console_errors if not re.search(r"status of (409|422)", error)]
    assert errors == [], errors
    print(f"\nscreenshot: {shot} ({time.monotonic() - started:.1f} s in the browser)")
