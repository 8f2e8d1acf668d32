"""A second stack without Firestore triggers, for seeding large data sets quickly
(every seeded document would otherwise queue a trigger delivery behind the measurements)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devtools.stack import Ports, Stack


@contextlib.contextmanager
def quiet_stack(stack: Stack, suffix: str) -> Iterator[Stack]:
    manifest = dataclasses.replace(stack.manifest, functions=[
        f for f in stack.manifest.functions if f.trigger != "firestore"])
    quiet = Stack(project=f"{stack.project}-{suffix}", ports=Ports.free(), manifest=manifest,
                  workdir=Path(tempfile.mkdtemp(prefix=f"simplytalk-bench-{suffix}-")), host_args=["--with-bench"])
    quiet.start()
    saved = {k: os.environ.get(k) for k in quiet.client_env()}
    os.environ.update(quiet.client_env())
    try:
        yield quiet
    finally:
        quiet.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
