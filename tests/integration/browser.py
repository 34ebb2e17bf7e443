"""A real headless Chromium (Debian's `chromium`, which `make setup` installs as root) driven over the Chrome
DevTools protocol: one websocket (the `websockets` package the gateway already has), no driver binary, no
download. Enough for a test to do what a person does: open a page, type, click, read what is on the screen, and
take screenshots; it records every URL the page requested and every error the console showed.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

START_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 60


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.fail("no Chromium: run `make setup` (as root it installs Debian's chromium), or apt-get install -y chromium")


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page (tab); close() ends the browser and removes its profile."""

    def __init__(self, *, width: int = 1280, height: int = 900) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="arena-chromium-"))
        command = [
            chromium_binary(), "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-sync", "--disable-background-networking", "--disable-component-update",
            "--disable-default-apps", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            f"--window-size={width},{height}", f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
            "about:blank",
        ]  # fmt: skip
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.log_path = self.profile.parent / f"{self.profile.name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._ids = itertools.count(1)
        self.requested_urls: list[str] = []  # every request the page made (Network.requestWillBeSent)
        self.console_errors: list[str] = []  # console errors, uncaught exceptions, CSP violations
        try:
            self.socket = connect(self._page_websocket_url(), max_size=None, open_timeout=10)
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
        except BaseException:
            self.close()
            raise

    def _page_websocket_url(self) -> str:
        """The page's DevTools address: Chromium writes its port to DevToolsActivePort once it listens."""
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}:\n{self.log_tail()}")
            if port_file.is_file() and (lines := port_file.read_text().split()):
                targets = httpx.get(f"http://127.0.0.1:{lines[0]}/json/list", timeout=5).json()
                pages = [target for target in targets if target.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise BrowserError(f"chromium did not open its DevTools port within {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # --- the protocol ----------------------------------------------------------------------------------------

    def send(self, method: str, **params) -> dict:
        """One DevTools command; events that arrive meanwhile are recorded."""
        command_id = next(self._ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requested_urls.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            values = (arg.get("value", arg.get("description")) for arg in params["args"])
            self.console_errors.append(" ".join(str(value) for value in values))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.console_errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")

    # --- what a person does ----------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 30, interval: float = 0.1):
        """Evaluate `expression` until it is truthy; return its value (or fail with what it last was)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"after {timeout}s, still {value!r}: {expression}")
            time.sleep(interval)

    def type_into(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view first)."""
        box = self.evaluate(
            f"(() => {{ const node = document.querySelector({json.dumps(selector)});"
            " if (!node) return null; node.scrollIntoView({block: 'center'});"
            " const box = node.getBoundingClientRect();"
            " return {x: box.x + box.width / 2, y: box.y + box.height / 2}; })()"
        )
        if box is None:
            raise BrowserError(f"nothing on the page matches {selector!r}")
        for event in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=event, x=box["x"], y=box["y"], button="left", clickCount=1)

    def choose_files(self, selector: str, paths: list[Path]) -> None:
        """What a person's file picker does: the files go into the `<input type=file>`, which fires its change event."""
        root = self.send("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"nothing on the page matches {selector!r}")
        self.send("DOM.setFileInputFiles", files=[str(path) for path in paths], nodeId=node)

    def select(self, selector: str, value: str) -> None:
        """Pick an option of a `<select>` as a person would (a headless browser draws no drop-down to click)."""
        chosen = self.evaluate(
            f"(() => {{ const node = document.querySelector({json.dumps(selector)});"
            f" if (!node || ![...node.options].some((option) => option.value === {json.dumps(value)})) return false;"
            f" node.value = {json.dumps(value)}; node.dispatchEvent(new Event('input', {{bubbles: true}}));"
            " node.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
        )
        if not chosen:
            raise BrowserError(f"{selector!r} has no option {value!r}")

    def allow_downloads(self, folder: Path) -> None:
        """Files the page offers for download are saved into `folder` under their own names."""
        folder.mkdir(parents=True, exist_ok=True)
        self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(folder))

    def text(self, selector: str) -> str | None:
        return self.evaluate(f"document.querySelector({json.dumps(selector)})?.innerText ?? null")

    def screenshot(self, path: Path) -> Path:
        """The whole page, not only the window, as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # its own session: the browser and its helper processes
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
