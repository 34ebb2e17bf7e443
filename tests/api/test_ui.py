"""GET /ui: the results page and its two files load without a key, hold no data, fetch nothing from elsewhere and
come with headers that let only the page's own files run. What a person sees in a browser: tests/integration/test_ui.py.
"""

from __future__ import annotations

import re

import pytest

from tests.api.arena_rows import arena_csv
from tests.api.conftest import API_KEY

PAGE_FILES = {
    "/ui": "text/html",
    "/ui/app.js": "text/javascript",
    "/ui/style.css": "text/css",
    "/ui/icon.svg": "image/svg+xml",
}


@pytest.mark.parametrize("path", sorted(PAGE_FILES))
def test_the_page_and_its_files_load_without_a_key_with_strict_headers(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(PAGE_FILES[path])
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'" and directives["img-src"] == "'self' blob:"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_page_holds_no_data_and_no_key(client, anonymous):
    dataset = client.post("/v1/datasets", files={"file": ("secret-name.csv", arena_csv(3), "text/csv")}).json()
    for path in PAGE_FILES:
        body = anonymous.get(path).text
        assert dataset["id"] not in body and "secret-name" not in body and API_KEY not in body


def test_the_page_runs_no_inline_code_and_fetches_nothing_from_elsewhere(anonymous):
    html = anonymous.get("/ui").text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts == [(' src="ui/app.js" defer', "")]  # one script, a file, nothing inline
    assert re.search(r"\son[a-z]+\s*=", html) is None and re.search(r"\sstyle\s*=", html) is None
    assert '<link rel="stylesheet" href="ui/style.css">' in html
    # The key's field has no name: even a form submitted without the script (refused anyway: form-action
    # 'none') could not put the key in a URL.
    inputs = re.findall(r"<input\b[^>]*>", html)
    [key_input] = [field for field in inputs if 'id="api-key"' in field]
    assert 'type="password"' in key_input and not [field for field in inputs if "name=" in field]
    for path in PAGE_FILES:
        body = anonymous.get(path).text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", body, flags=re.I) is None, path  # no CDN, no host


def test_the_script_sends_the_key_in_a_header_only_and_inserts_text_not_html(anonymous):
    script = anonymous.get("/ui/app.js").text
    # Relative API paths (behind a proxy under any prefix); no leading slash, no host.
    # Reads (api), actions (request) and the upload (XMLHttpRequest.open).
    paths = re.findall(r"""(?:api\(|request\("[A-Z]+",|\.open\("[A-Z]+",)\s*[`"']([^`"']+)""", script)
    assert len(paths) > 10 and all(path.startswith("v1/") for path in paths), paths
    assert "return `Bearer ${key}`;" in script  # one place makes the header's value...
    assert script.count("authorization()") == 3  # ...used by fetch, by the upload, and defined once
    assert "headers = { Authorization: authorization() }" in script
    assert 'xhr.setRequestHeader("Authorization", authorization())' in script
    assert re.search(r"[?&](api_?key|key|token)=", script, flags=re.I) is None
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "localStorage" not in script  # the key lives in the tab's sessionStorage only


def test_only_the_pages_own_files_are_served(anonymous):
    for path in ("/ui/index.html", "/ui/main.py", "/ui/..%2Froutes%2Fui.py", "/ui/%2e%2e", "/ui/app.js.map"):
        assert anonymous.get(path).status_code == 404, path
    redirect = anonymous.get("/ui/", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "../ui"  # relative: any prefix survives


def test_the_api_still_needs_the_key(anonymous):
    assert anonymous.get("/v1/jobs").status_code == 401
