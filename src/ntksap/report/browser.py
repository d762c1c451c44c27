"""Check a report page in headless Chromium: that it loads, shows every figure and table, and
logs no console error; optionally take a full-page screenshot.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no websocket client and no
network port are needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_PROBE = """(() => {
  const imgs = [...document.images];
  const shown = i => { const r = i.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  return JSON.stringify({
    title: document.title, images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    visible: imgs.filter(shown).length,
    tables: document.querySelectorAll('table').length,
    rows: document.querySelectorAll('table tbody tr').length,
    height: document.documentElement.scrollHeight });
})()"""


def find_chromium() -> str | None:
    """The Chromium binary: ``$NTKSAP_CHROMIUM`` or the first of :data:`CANDIDATES` on PATH."""
    named = os.environ.get("NTKSAP_CHROMIUM")
    if named:
        return named
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What the browser saw once the page had loaded."""

    title: str
    images: int
    images_loaded: int
    images_visible: int
    tables: int
    table_rows: int
    height: int
    errors: list[str] = field(default_factory=list)
    screenshot: bytes | None = None

    @property
    def ok(self) -> bool:
        return (not self.errors and self.images == self.images_loaded == self.images_visible
                and self.tables > 0)


class _DevTools:
    """A Chromium process and its DevTools pipe."""

    def __init__(self, binary: str, profile: str, log: Any) -> None:
        cmd_read, cmd_write = os.pipe()
        res_read, res_write = os.pipe()
        # move every end above 4 so that the child's dup2 onto 3 and 4 cannot clobber one
        cmd_read, cmd_write, res_read, res_write = (
            _high(fd) for fd in (cmd_read, cmd_write, res_read, res_write))

        def child() -> None:
            os.dup2(cmd_read, 3)
            os.dup2(res_write, 4)
            for fd in (cmd_read, cmd_write, res_read, res_write):
                os.close(fd)

        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=child, close_fds=False)
        os.close(cmd_read)
        os.close(res_write)
        self.write, self.read = cmd_write, res_read
        self.buffer, self.next_id, self.events = b"", 0, []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.write, self.read):
            try:
                os.close(fd)
            except OSError:
                pass

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write, json.dumps(message).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == self.next_id, timeout, method)
        if "error" in reply:
            raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == name:
                return event
        return self._until(lambda m: m.get("method") == name, timeout, name)

    def _until(self, match: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if match(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"Chromium gave no answer to {what} within {timeout} s "
                                   f"(exit code {self.proc.poll()})")
            ready, _, _ = select.select([self.read], [], [], left)
            if ready:
                chunk = os.read(self.read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed its DevTools pipe during {what}")
                self.buffer += chunk


def _high(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def check_page(path: str | Path, *, chromium: str | None = None, timeout: float = 60.0,
               screenshot: bool = True, width: int = 1280) -> PageCheck:
    """Load ``path`` in headless Chromium and report what it shows and logs.

    Console errors, uncaught exceptions and error log entries (e.g. a resource that failed to
    load) all land in ``errors``. Raises FileNotFoundError without a Chromium binary.
    """
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium binary found (apt-get install chromium, or set "
                                "NTKSAP_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="ntksap-chromium-") as profile, \
            open(Path(profile) / "chromium.log", "wb") as log:
        tools = _DevTools(binary, str(Path(profile) / "profile"), log)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"},
                                timeout=timeout)["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target,
                                                           "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                tools.send(f"{domain}.enable", session=session)
            tools.send("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session)
            tools.events.clear()
            tools.send("Page.navigate", {"url": url}, session=session)
            tools.wait_event("Page.loadEventFired", timeout)
            time.sleep(0.3)  # let late console messages arrive
            probe = tools.send("Runtime.evaluate", {"expression": _PROBE,
                                                    "returnByValue": True}, session=session)
            seen = json.loads(probe["result"]["value"])
            image = None
            if screenshot:
                shot = tools.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True}, session=session,
                    timeout=timeout)
                image = base64.b64decode(shot["data"])
            errors = _errors(tools.events)
        finally:
            tools.close()
    return PageCheck(seen["title"], seen["images"], seen["loaded"], seen["visible"],
                     seen["tables"], seen["rows"], seen["height"], errors, image)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append("exception: " + str(details.get("exception", {}).get("description")
                                           or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                              for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
    return out
