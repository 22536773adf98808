"""Open an HTML file in headless Chromium and report what a reader's browser would see.

The browser is driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so no websocket library or
browser download is needed, only the system's ``chromium``. :func:`open_page` loads the page,
waits for its load event and returns a :class:`PageCheck`: console errors and uncaught
exceptions, every request other than the page itself and inline ``data:`` pictures, each
``<img>`` with whether it decoded, the texts of the page's tables and a full-page screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Every <img>: its alt text and whether it decoded; every table row's cells as text.
PAGE_CONTENT = """JSON.stringify({
  images: Array.from(document.images, (img) => ({
    alt: img.alt, decoded: img.complete && img.naturalWidth > 0, width: img.naturalWidth})),
  tables: Array.from(document.querySelectorAll("table"), (table) => ({
    id: table.id, caption: table.caption ? table.caption.textContent.trim() : "",
    rows: Array.from(table.rows, (row) => Array.from(row.cells, (c) => c.textContent.trim()))})),
  title: document.title,
})"""


def find_browser() -> str | None:
    """The path of a Chromium executable on ``PATH``, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What the browser saw of one page."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    screenshot: bytes = b""

    def table_with(self, text: str) -> dict[str, Any]:
        """The first table whose id or caption contains ``text``."""
        for table in self.tables:
            if text in table["id"] or text in table["caption"]:
                return table
        raise AssertionError(f"no table with {text!r}: {[t['id'] for t in self.tables]}")

    def screenshot_spread(self) -> float:
        """The largest standard deviation of the screenshot's colour channels (0: one colour)."""
        image = Image.open(io.BytesIO(self.screenshot)).convert("RGB")
        return max(ImageStat.Stat(image).stddev)


def place_fds(commands: int, answers: int) -> None:
    """In the browser's process (before it starts): its command pipe on fd 3, its answer pipe on
    fd 4, whatever numbers the pipes had (moved out of the way first, so neither overwrites the
    other)."""
    commands, answers = os.dup(commands), os.dup(answers)
    os.dup2(commands, 3, inheritable=True)
    os.dup2(answers, 4, inheritable=True)


class DevToolsPipe:
    """A Chromium process driven through ``--remote-debugging-pipe``."""

    def __init__(self, executable: str, profile: Path, width: int = 1280) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # the browser reads commands on its fd 3 and writes answers and events on its fd 4
        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--window-size={width},900",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            pass_fds=(to_browser_read, from_browser_write, 3, 4),
            preexec_fn=lambda: place_fds(to_browser_read, from_browser_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its answer (events that arrive meanwhile are kept in
        :attr:`events`); an error answer raises ``RuntimeError``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            received = self.receive()
            if received.get("id") == self._next_id:
                if "error" in received:
                    raise RuntimeError(f"{method}: {received['error']}")
                return received.get("result", {})
            self.events.append(received)

    def receive(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next message from the browser."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no message from the browser")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the event ``method`` (also when it already arrived)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.receive(timeout)
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(f"no {method} within {timeout} s")

    def close(self) -> None:
        """Close the browser (killed when it does not exit in 10 s)."""
        with contextlib.suppress(RuntimeError, OSError, TimeoutError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def page_problems(events: list[dict[str, Any]], page_url: str) -> tuple[list[str], list[str]]:
    """Console errors and exceptions, and requests for anything but the page and ``data:``
    URLs, among DevTools events."""
    errors, requests = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", "")
            errors.append(f"{details.get('text', 'exception')} {thrown}".strip())
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url != page_url and not url.startswith("data:"):
                requests.append(url)
    return errors, requests


def open_page(path: Path, executable: str, width: int = 1280) -> PageCheck:
    """Load ``path`` in headless Chromium and return what it saw (see the module docstring)."""
    page_url = path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="parsenet-browser-") as profile:
        browser = DevToolsPipe(executable, Path(profile), width)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.send(f"{domain}.enable", session=session)
            browser.events.clear()
            browser.send("Page.navigate", {"url": page_url}, session=session)
            browser.wait_for("Page.loadEventFired")
            content = browser.send(
                "Runtime.evaluate",
                {"expression": PAGE_CONTENT, "returnByValue": True},
                session=session,
            )["result"]["value"]
            shot = browser.send(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session=session,
            )
            errors, requests = page_problems(browser.events, page_url)
        finally:
            browser.close()
    found = json.loads(content)
    return PageCheck(
        errors=errors,
        requests=requests,
        images=found["images"],
        tables=found["tables"],
        title=found["title"],
        screenshot=base64.b64decode(shot["data"]),
    )
