"""The migration runner: ledger, checkpoints, batched writes, dry runs, progress, reports."""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

LEDGER = "migrations"
BATCH_LIMIT = 500  # Firestore's limit on writes in one batch
USERS_PAGE = 500
MAX_REPORTED = 200


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Writer:
    """Batches writes (at most 500 a batch); in a dry run it only counts them. A batch that
    meets a document deleted meanwhile is replayed one write at a time, skipping that one."""

    def __init__(self, db: Any, dry_run: bool) -> None:
        self.db, self.dry_run = db, dry_run
        self._ops: list[tuple[str, Any, tuple[Any, ...], dict[str, Any]]] = []
        self.writes = 0
        self.commits = 0
        self.skipped: list[str] = []

    def add(self, op: str, ref: Any, *args: Any, **kwargs: Any) -> None:
        self.writes += 1
        if self.dry_run:
            return
        self._ops.append((op, ref, args, kwargs))
        if len(self._ops) == BATCH_LIMIT:
            self.flush()

    def flush(self) -> None:
        from google.api_core import exceptions as gexc

        ops, self._ops = self._ops, []
        if not ops:
            return
        batch = self.db.batch()
        for op, ref, args, kwargs in ops:
            getattr(batch, op)(ref, *args, **kwargs)
        try:
            batch.commit()
            self.commits += 1
        except gexc.NotFound:
            for op, ref, args, kwargs in ops:
                try:
                    getattr(ref, op)(*args, **kwargs)
                    self.commits += 1
                except gexc.NotFound:
                    self.skipped.append(ref.path)


@dataclass
class Context:
    db: Any
    dry_run: bool
    checkpoint: str | None
    save_checkpoint: Callable[[str], None]
    progress: Callable[[str], None]
    writer: Writer
    now: dt.datetime
    counts: Counter[str] = field(default_factory=Counter)
    bad_data: list[dict[str, str]] = field(default_factory=list)

    def report(self, kind: str, path: str, problem: str) -> None:
        self.counts[f"bad:{kind}"] += 1
        if len(self.bad_data) < MAX_REPORTED:
            self.bad_data.append({"kind": kind, "path": path, "problem": problem})

    def user_pages(self, page: int = USERS_PAGE) -> Iterator[list[Any]]:
        """Users by document id from the checkpoint on; the checkpoint moves after each page is written."""
        users = self.db.collection("users").order_by("__name__")
        cursor = self.checkpoint
        while True:
            query = users.start_after({"__name__": cursor}) if cursor else users
            docs = list(query.limit(page).stream())
            if not docs:
                return
            yield docs
            self.writer.flush()
            cursor = docs[-1].id
            self.save_checkpoint(cursor)
            self.progress(f"{self.counts['users']} users, {self.writer.writes} writes")
            if len(docs) < page:
                return


def discover() -> list[ModuleType]:
    import migrations

    modules = []
    for info in pkgutil.iter_modules(migrations.__path__):
        if info.name.startswith("m") and info.name[1:4].isdigit():
            modules.append(importlib.import_module(f"migrations.{info.name}"))
    return sorted(modules, key=lambda m: m.NUMBER)


@dataclass
class Outcome:
    number: int
    name: str
    status: str  # applied | skipped | dry-run | failed
    counts: dict[str, int]
    writes: int
    bad_data: list[dict[str, str]]


def run_all(db: Any, dry_run: bool = False, only: int | None = None,
            progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
            now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
            modules: list[ModuleType] | None = None) -> list[Outcome]:
    outcomes = []
    for module in modules or discover():
        if only is not None and only != module.NUMBER:
            continue
        outcomes.append(run_one(db, module, dry_run, progress, now))
        if outcomes[-1].status == "failed":
            break
    return outcomes


def run_one(db: Any, module: ModuleType, dry_run: bool, progress: Callable[[str], None],
            now: Callable[[], dt.datetime]) -> Outcome:
    number, name = module.NUMBER, module.NAME
    ledger = db.collection(LEDGER).document(f"{number:03d}")
    record = ledger.get().to_dict() or {}
    if record.get("status") == "applied":
        progress(f"{number:03d} {name}: already applied")
        return Outcome(number, name, "skipped", dict(record.get("counts") or {}), 0, [])
    checkpoint = None if dry_run else record.get("checkpoint")

    def save_checkpoint(cursor: str) -> None:
        if not dry_run:
            ledger.set({"checkpoint": cursor, "counts": dict(ctx.counts), "updatedAt": now()}, merge=True)

    ctx = Context(db=db, dry_run=dry_run, checkpoint=checkpoint, save_checkpoint=save_checkpoint,
                  progress=lambda line: progress(f"{number:03d} {name}: {line}"),
                  writer=Writer(db, dry_run), now=now())
    if checkpoint:
        ctx.counts.update(record.get("counts") or {})
        progress(f"{number:03d} {name}: resuming after {checkpoint}")
    if not dry_run:
        ledger.set({"number": number, "name": name, "status": "running", "codeVersion": code_version(),
                    "startedAt": record.get("startedAt") or now(), "attempts": int(record.get("attempts", 0)) + 1},
                   merge=True)
    try:
        module.run(ctx)
        ctx.writer.flush()
    except Exception as exc:
        if not dry_run:
            ledger.set({"status": "failed", "error": repr(exc)[:500], "counts": dict(ctx.counts),
                        "failedAt": now()}, merge=True)
        progress(f"{number:03d} {name}: failed: {exc!r}; a rerun resumes from the checkpoint")
        return Outcome(number, name, "failed", dict(ctx.counts), ctx.writer.writes, ctx.bad_data)
    if not dry_run:
        ledger.set({"status": "applied", "endedAt": now(), "counts": dict(ctx.counts), "checkpoint": None,
                    "writes": ctx.writer.writes, "badData": ctx.bad_data, "error": None}, merge=True)
    status = "dry-run" if dry_run else "applied"
    progress(f"{number:03d} {name}: {status}, {ctx.writer.writes} writes, {dict(ctx.counts)}")
    return Outcome(number, name, status, dict(ctx.counts), ctx.writer.writes, ctx.bad_data)
