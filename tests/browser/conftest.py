"""Browser tests: a real headless Chromium (Debian's `chromium`, installed by `make setup`)
loads a static page from `http://localhost:3000`, an origin the local stack allows, and
calls the API cross-origin as a frontend does. A stack of their own, on free ports, with
the allowed origins set explicitly; a second page server on an origin that is not allowed."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simplytalk.config import LOCAL_ORIGINS

from devtools.stack import Ports, Stack, port_open
from tests.browser.cdp import BrowserMissing, Chromium
from tests.safety import UnsafeTarget, check_target

PAGE_DIR = Path(__file__).parent / "page"
PROJECT = "demo-simplytalk-browser"
PREFERRED_PORT = 3000  # the frontend's dev server, allowed by `make run`'s defaults
# Short tap runs and call limits, as in the emulator tests: a call started here ends quickly.
HOST_ENV = {"SIMPLYTALK_TAP_RUN_SECONDS": "8", "SIMPLYTALK_TAP_LEASE_SECONDS": "3",
            "SIMPLYTALK_MAX_CALL_SECONDS": "30", "SIMPLYTALK_CALL_IDLE_SECONDS": "12"}


class PageServer:
    """The static page (tests/browser/page) on loopback, in a thread."""

    def __init__(self, port: int) -> None:
        handler = functools.partial(_Quiet, directory=str(PAGE_DIR))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.origin = f"http://localhost:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.origin}/{path.lstrip('/')}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    try:
        chromium = Chromium()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield chromium
    finally:
        chromium.stop()


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    """`http://localhost:3000` when that port is free, else a free port (added to the allowed origins)."""
    try:
        server = PageServer(PREFERRED_PORT)
    except OSError:
        server = PageServer(0)
    yield server
    server.close()


@pytest.fixture(scope="module")
def other_origin_server() -> Iterator[PageServer]:
    """The same page on an origin the API does not allow."""
    server = PageServer(0)
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser_stack(page_server: PageServer) -> Iterator[Stack]:
    origins = LOCAL_ORIGINS if page_server.port == PREFERRED_PORT else f"{LOCAL_ORIGINS},{page_server.origin}"
    stack = _started(origins)
    try:
        yield stack
    finally:
        stack.stop()
    ports = stack.ports
    left = [p for p in (ports.firestore, ports.auth, ports.pubsub, ports.functions, ports.stripe, ports.openai,
                        ports.taps) if port_open(p)]
    assert not left, f"ports still open after the stack stopped: {left}"


def _started(origins: str, tries: int = 2) -> Stack:
    """A stack on free ports. A start that fails (a free port taken meanwhile, an emulator slow to
    answer on a loaded machine) is tried once more on other ports, and said so."""
    for attempt in range(1, tries + 1):
        stack = Stack(project=PROJECT, ports=Ports.free(),
                      workdir=Path(tempfile.mkdtemp(prefix="simplytalk-browser-stack-")),
                      host_env={**HOST_ENV, "SIMPLYTALK_ALLOWED_ORIGINS": origins})
        env = stack.client_env()
        try:
            check_target(PROJECT, [env[k] for k in (
                "FIRESTORE_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")])
        except UnsafeTarget as exc:
            pytest.exit(str(exc), returncode=2)
        try:
            stack.start(timeout=120)  # the Auth emulator (node) alone can take most of a minute on a busy machine
        except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
            if attempt == tries:
                raise
            warnings.warn(f"the local stack did not start ({exc!r}; logs in {stack.workdir}); trying again",
                          stacklevel=1)
            continue
        return stack
    raise AssertionError("unreachable")


def page_config(stack: Stack, page_server: PageServer, **extra: Any) -> dict[str, Any]:
    names = ("token-usage", "openai-assistants", "assistants", "realtime-calls", "billing")
    return {"authHost": stack.auth_host, "firestoreHost": stack.firestore_host, "project": stack.project,
            "functions": {name: stack.function_url(name) for name in names},
            "scrapeUrl": f"http://127.0.0.1:{page_server.port}/knowledge.html",
            "email": f"browser-{os.getpid()}-{threading.get_ident()}@example.com", "password": "correct-horse-1",
            **extra}


@contextlib.contextmanager
def opened(browser: Chromium, url: str) -> Iterator[Any]:
    page = browser.new_page()
    try:
        page.navigate(url)
        yield page
    finally:
        page.close()
