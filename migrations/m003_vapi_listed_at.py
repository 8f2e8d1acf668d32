"""003: every vapi assistant (`assistants/{id}`) gets `listedAt`, its place in `GET /assistants`.

listedAt is the document's `createdAt` (a timestamp, an RFC 3339 string, epoch seconds or
milliseconds) as a timestamp, 1970-01-01 when missing or unreadable: the value the
`vapi-listed-at` trigger keeps on new and changed documents. This fills it on documents
written before that trigger was deployed (deploy the trigger first, then run this).

Pages of 500 documents by id (only `createdAt` and `listedAt` read), from the checkpoint on.
A document whose listedAt is already right is not written, so a rerun writes nothing. The
others are updated in one batch a page, each write with a precondition on the update time
read: if any document changed meanwhile (or was deleted), the batch is refused as a whole and
each of its documents is brought in line on a fresh read, the trigger's own way
(`sync_listed_at`). createdAt values that cannot be read, and documents without a userId
(never listed), are reported.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from simplytalk import collections as col
from simplytalk.repositories.assistants import ListedAtOutcome, listed_at, listed_at_is_current
from simplytalk.services.assistants import sync_listed_at
from simplytalk.services.assistants_deps import firestore_deps

from migrations.runner import BATCH_LIMIT, Context

NUMBER = 3
NAME = "vapi-assistants-listed-at"
PAGE = BATCH_LIMIT  # one batch a page, at most 500 writes


def _pages(ctx: Context, page: int) -> Any:
    """Documents by id from the checkpoint on; the checkpoint moves once a page is written."""
    query = ctx.db.collection(col.VAPI_ASSISTANTS).select(["createdAt", "listedAt", "userId"]).order_by("__name__")
    cursor = ctx.checkpoint
    while True:
        docs = list((query.start_after({"__name__": cursor}) if cursor else query).limit(page).stream())
        if not docs:
            return
        yield docs
        cursor = docs[-1].id
        ctx.save_checkpoint(cursor)
        ctx.progress(f"{ctx.counts['assistants']} assistants, {ctx.writer.writes} writes")
        if len(docs) < page:
            return


def run(ctx: Context, page: int = PAGE) -> None:
    for docs in _pages(ctx, page):
        # a page's counts and reports are taken in once it is written, so a run that resumes
        # from the checkpoint (after the page before) counts each document once
        counts: Counter[str] = Counter(assistants=len(docs))
        problems: list[tuple[str, str]] = []
        stale = []
        for snap in docs:
            fields = snap.to_dict() or {}
            problems += _check(snap.id, fields)
            if listed_at_is_current(fields):
                counts["already"] += 1
            else:
                stale.append((snap, listed_at(fields.get("createdAt"))))
        ctx.writer.writes += len(stale)
        if stale and not ctx.dry_run:
            _write(ctx, stale, counts)
        ctx.counts.update(counts)
        for path, problem in problems:
            ctx.report("assistant", path, problem)


def _write(ctx: Context, stale: list[tuple[Any, Any]], counts: Counter[str]) -> None:
    from google.api_core import exceptions as gexc

    batch = ctx.db.batch()
    for snap, when in stale:
        batch.update(snap.reference, {"listedAt": when},
                     option=ctx.db.write_option(last_update_time=snap.update_time))
    try:
        batch.commit()
        counts["set"] += len(stale)
        return
    except (gexc.FailedPrecondition, gexc.NotFound):
        pass  # one of them changed or went meanwhile: each on a fresh read
    deps = firestore_deps(ctx.db)
    for snap, _ in stale:
        outcome = sync_listed_at(deps, snap.id)
        counts["set" if outcome is ListedAtOutcome.SET else f"changed-meanwhile:{outcome.value}"] += 1


def _check(doc_id: str, fields: dict[str, Any]) -> list[tuple[str, str]]:
    """What to report about one document: (path, problem)."""
    path = f"{col.VAPI_ASSISTANTS}/{doc_id}"
    problems = []
    uid = fields.get("userId")
    if not isinstance(uid, str) or not uid:
        problems.append((path, "no userId: listed for nobody"))
    created = fields.get("createdAt")
    if created is not None and listed_at(created) == listed_at(None):
        problems.append((f"{path}.createdAt", f"unreadable or 1970 ({type(created).__name__}): listed as 1970-01-01"))
    return problems
