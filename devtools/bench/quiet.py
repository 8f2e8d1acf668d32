"""A second stack without Firestore triggers, for seeding large data sets quickly
(every seeded document would otherwise queue a trigger delivery behind the measurements)."""

from __future__ import annotations

import contextlib
import dataclasses
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
    try:
        with quiet.exported_env():
            yield quiet
    finally:
        quiet.stop()
