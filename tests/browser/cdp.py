"""A headless Chromium driven over the Chrome DevTools Protocol (CDP).

Debian's `chromium` is started with `--remote-debugging-port=0`; it writes the port it
chose to `DevToolsActivePort` in its profile folder, and we talk to one page target over
a WebSocket (the `websockets` sync client). Only what the browser tests need: open a
tab, navigate, evaluate JavaScript (awaiting promises), and keep what the page logged.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

# Flags for a quiet, headless, self-contained browser: no first-run UI, and none of the
# background connections to Google's hosts (refused on a closed network, slowly).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic", "--disable-extensions", "--disable-default-apps",
         "--metrics-recording-only", "--mute-audio", "--password-store=basic", "--use-mock-keychain",
         # a page asks for no camera or microphone, but WebRTC must not wait on a device
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


class BrowserMissing(RuntimeError):
    pass


class CdpError(RuntimeError):
    pass


def find_chromium() -> str:
    """Debian's chromium (`make setup` installs it), or $SIMPLYTALK_CHROMIUM."""
    explicit = os.environ.get("SIMPLYTALK_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BrowserMissing(f"SIMPLYTALK_CHROMIUM={explicit} is not an executable")
        return explicit
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if not found:
        raise BrowserMissing("Chromium is not installed: the browser tests need Debian's `chromium` package. "
                             "Run `make setup` (it installs it with apt-get), or set SIMPLYTALK_CHROMIUM.")
    return found


class Page:
    """One tab, over its own CDP WebSocket."""

    def __init__(self, ws_url: str, timeout: float) -> None:
        self.ws: ClientConnection = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=timeout)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self.console: list[str] = []  # what the page logged, and its uncaught exceptions
        self.call("Runtime.enable")
        self.call("Page.enable")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()

    def call(self, method: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer within {timeout or self.timeout} s; console: {self.console}")
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            msg = json.loads(raw)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")

    def navigate(self, url: str) -> None:
        """Open `url` and wait until its `load` event."""
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise CdpError(f"{url} did not load within {self.timeout} s")
            time.sleep(0.02)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The value of a JavaScript expression (a promise is awaited), as JSON."""
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"JavaScript threw: {text}; console: {self.console}")
        return result.get("result", {}).get("value")


class Chromium:
    """A headless Chromium process with a throwaway profile; stop() ends its whole process group."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.binary = find_chromium()
        self.timeout = timeout
        self.home = Path(tempfile.mkdtemp(prefix="simplytalk-chromium-"))  # removed by stop()
        self.profile = self.home / "profile"
        self.log_path = self.home / "chromium.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.port = self._wait_port()
        except BaseException:
            self.stop()
            raise
        self.pages: list[Page] = []

    def _wait_port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode}: "
                               f"{self.log_path.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                lines = marker.read_text().splitlines()
                if lines:
                    return int(lines[0])
            time.sleep(0.05)
        raise CdpError(f"chromium gave no DevTools port within {self.timeout} s: "
                       f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def _http(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def new_page(self) -> Page:
        target = self._http("/json/new?about:blank", method="PUT")
        page = Page(target["webSocketDebuggerUrl"], self.timeout)
        self.pages.append(page)
        return page

    def stop(self) -> None:
        for page in getattr(self, "pages", []):
            page.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # helpers that outlived the browser
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)
