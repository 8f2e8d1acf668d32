"""The real local stack, started once per session on free ports."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.emulator_auth import AuthUser, sign_up
from devtools.stack import Ports, Stack, port_open
from tests.safety import UnsafeTarget, check_target

PROJECT = os.environ.get("SIMPLYTALK_TEST_PROJECT", "demo-simplytalk-test")
# Short tap generations (every test call is handed over between runs every few seconds),
# short leases (a dead tap is replaced quickly), and call limits a test can wait out.
TEST_HOST_ENV = {"SIMPLYTALK_TAP_RUN_SECONDS": "8", "SIMPLYTALK_TAP_LEASE_SECONDS": "3",
                 "SIMPLYTALK_MAX_CALL_SECONDS": "30", "SIMPLYTALK_CALL_IDLE_SECONDS": "12",
                 # tests create many assistants and calls per user; card setup keeps a low limit to test
                 "SIMPLYTALK_RATE_LIMITS": "assistant-create=1000/60,call-start=1000/60,setup-intent=12/3600"}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    ports = Ports.free()
    candidate = Stack(project=PROJECT, ports=ports,
                      workdir=Path(tempfile.mkdtemp(prefix="simplytalk-stack-")), host_env=TEST_HOST_ENV)
    try:
        env = candidate.client_env()
        check_target(PROJECT, [env[k] for k in (
            "FIRESTORE_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")])
    except UnsafeTarget as exc:
        pytest.exit(str(exc), returncode=2)
    candidate.start()
    try:
        with candidate.exported_env():
            yield candidate
    finally:
        candidate.stop()
    left = [p for p in (ports.firestore, ports.auth, ports.pubsub, ports.functions, ports.stripe, ports.openai,
                        ports.taps) if port_open(p)]
    assert not left, f"ports still open after the stack stopped: {left}"


@pytest.fixture(scope="session")
def db(stack: Stack) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    return firestore.Client(project=stack.project, credentials=AnonymousCredentials())


@pytest.fixture(autouse=True)
def _clean_firestore(stack: Stack) -> None:
    # the last test's triggers, follow-ups and Stripe webhooks finish before the wipe; if one is
    # still running after 15 s (a scrape waiting out its deadline), say so: it may write into this test
    if not stack.wait_for_deliveries(timeout=15):
        warnings.warn("deliveries still in flight when Firestore was wiped", stacklevel=1)
    stack.clear_firestore()


_emails = itertools.count()


@pytest.fixture
def new_user(stack: Stack) -> Callable[[], AuthUser]:
    """Make a new Auth emulator account (no Firestore profile yet)."""

    def make() -> AuthUser:
        return sign_up(stack.auth_host, f"user{next(_emails)}-{time.time_ns()}@example.com")

    return make


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class _Pages:
    """A local web server for knowledge scraping tests (loopback only)."""

    ABOUT = ("<html><head><title>Acme Dental</title><style>p{}</style></head><body>"
             "<h1>Opening hours</h1><p>Mon-Fri 9-17</p><script>var x=1;</script></body></html>")

    def __init__(self) -> None:
        import http.server
        import threading

        pages = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                pages.hits.append(self.path)
                route = self.path.split("?")[0]
                if route == "/about":
                    self._send(200, "text/html; charset=utf-8", pages.ABOUT.encode())
                elif route == "/plain":
                    self._send(200, "text/plain", b"Plain   text\n\n\nsecond line")
                elif route == "/big":
                    self._send(200, "text/plain", b"x" * 3_000_000)
                elif route == "/slow":
                    time.sleep(3)
                    self._send(200, "text/plain", b"late")
                elif route == "/binary":
                    self._send(200, "image/png", b"\x89PNG\r\n")
                elif route == "/redirect":
                    self._redirect(f"{pages.base}/about")
                elif route == "/loop":
                    self._redirect(f"{pages.base}/loop")
                elif route == "/redirect-blocked":
                    self._redirect(f"http://0.0.0.0:{pages.port}/about")
                elif route == "/redirect-ftp":
                    self._redirect("ftp://example.com/file")
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (timeout tests)
                    self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.hits: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def pages() -> Iterator[_Pages]:
    server = _Pages()
    yield server
    server.close()
