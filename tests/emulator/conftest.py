"""The real local stack, started once per session on free ports."""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.emulator_auth import AuthUser, sign_up
from devtools.stack import Ports, Stack, port_open
from tests.safety import UnsafeTarget, check_target

PROJECT = os.environ.get("SIMPLYTALK_TEST_PROJECT", "demo-simplytalk-test")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    ports = Ports.free()
    candidate = Stack(project=PROJECT, ports=ports,
                      workdir=Path(tempfile.mkdtemp(prefix="simplytalk-stack-")))
    try:
        env = candidate.client_env()
        check_target(PROJECT, [env[k] for k in (
            "FIRESTORE_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")])
    except UnsafeTarget as exc:
        pytest.exit(str(exc), returncode=2)
    candidate.start()
    saved = {k: os.environ.get(k) for k in candidate.client_env()}
    os.environ.update(candidate.client_env())
    yield candidate
    candidate.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    left = [p for p in (ports.firestore, ports.auth, ports.pubsub, ports.functions) if port_open(p)]
    assert not left, f"ports still open after the stack stopped: {left}"


@pytest.fixture(scope="session")
def db(stack: Stack) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    return firestore.Client(project=stack.project, credentials=AnonymousCredentials())


@pytest.fixture(autouse=True)
def _clean_firestore(stack: Stack) -> None:
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
