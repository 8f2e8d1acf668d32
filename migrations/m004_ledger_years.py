"""004: the billing ledger's all-years `billed` map moves to one document a year.

Before the year roll-over, `billingLedger/{uid}.billed.{YYYY-MM}.{aid}` held every
period ever billed. Invoicing now keeps `billingLedger/{uid}/years/{YYYY}` (same
`billed` shape, that year's periods only) and reads a year document in preference to
the root's map; the root keeps lastInvoiceId and updatedAt.

Per ledger with a root `billed`: the year documents that do not exist yet are created
from the root's periods of their year, and `billed` is deleted from the root, in one
batch with a precondition on the root's update time (and `create` for every year
document), so the move is atomic per user: an invoice written meanwhile (it updates
the root, and may create a year document) refuses the batch and that user is read
again. A year document that exists already is kept as it is: invoicing reads it, and
the invoice that created it carried the root's figures for its year over; root
figures that differ from it are reported. A ledger whose `billed` is not a map of
valid periods is reported and left alone (invoicing reads it as before).

Several users share a batch (at most 500 writes); a batch refused because one of them
changed is redone one user at a time. Ledgers are paged by id from the runner's
checkpoint. Idempotent: a ledger without a root `billed` has nothing to move.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simplytalk import collections as col
from simplytalk.charges import ledger_year
from simplytalk.pricing import valid_period
from simplytalk.repositories.invoices import ledger_fields, ledger_figures

from migrations.runner import BATCH_LIMIT, Context

NUMBER = 4
NAME = "billing-ledger-years"
PAGE = 300
RETRIES = 5


@dataclass
class Move:
    """One user's move: the year documents to create, then the root's `billed` deleted."""

    uid: str
    root: Any  # the root snapshot (its update time is the batch's precondition)
    creates: dict[str, dict[str, Any]] = field(default_factory=dict)  # year -> document

    @property
    def writes(self) -> int:
        return 1 + len(self.creates)


def run(ctx: Context) -> None:
    cursor = ctx.checkpoint
    while True:
        query = ctx.db.collection(col.BILLING_LEDGER).order_by("__name__")
        if cursor:
            query = query.start_after({"__name__": cursor})
        page = list(query.limit(PAGE).stream())
        if not page:
            return
        moves = [m for m in _plan_page(ctx, page) if m is not None]
        _commit(ctx, moves)
        cursor = page[-1].id
        ctx.save_checkpoint(cursor)
        ctx.progress(f"{ctx.counts['ledgers']} ledgers, {ctx.counts['moved']} moved, {ctx.writer.writes} writes")
        if len(page) < PAGE:
            return


def _legacy(ctx: Context, snap: Any) -> dict[str, dict[str, Any]] | None:
    """The root's `billed` grouped by year, or None (nothing to move, or reported and left alone)."""
    data = snap.to_dict() or {}
    if "billed" not in data:
        return None
    billed = data["billed"]
    path = f"{col.BILLING_LEDGER}/{snap.id}.billed"
    if not isinstance(billed, dict) or not all(
            isinstance(p, str) and valid_period(p) and isinstance(per, dict) for p, per in billed.items()):
        ctx.report("ledger", path, "not a map of YYYY-MM periods to assistants; left in place")
        return None
    by_year: dict[str, dict[str, Any]] = defaultdict(dict)
    for period, per in billed.items():
        by_year[ledger_year(period)][period] = per
    return by_year


def _plan_page(ctx: Context, page: list[Any]) -> list[Move | None]:
    legacy = {}
    for snap in page:
        ctx.counts["ledgers"] += 1
        by_year = _legacy(ctx, snap)
        if by_year is None:
            ctx.counts["nothing-to-move"] += 1
        else:
            legacy[snap.id] = (snap, by_year)
    existing = _snapshots(ctx, [_years(ctx, uid).document(year) for uid, (_, by_year) in legacy.items()
                                for year in by_year])
    return [_plan(ctx, uid, snap, by_year, existing) for uid, (snap, by_year) in legacy.items()]


def _snapshots(ctx: Context, refs: list[Any]) -> dict[str, Any]:
    return {snap.reference.path: snap for snap in ctx.db.get_all(refs)} if refs else {}


def _years(ctx: Context, uid: str) -> Any:
    return ctx.db.collection(col.BILLING_LEDGER).document(uid).collection(col.LEDGER_YEARS)


def _plan(ctx: Context, uid: str, root: Any, by_year: dict[str, dict[str, Any]], existing: dict[str, Any]) -> Move:
    move = Move(uid, root)
    for year, periods in sorted(by_year.items()):
        ref = _years(ctx, uid).document(year)
        snap = existing.get(ref.path)
        figures = ledger_figures(periods)
        if snap is not None and snap.exists:
            kept = {p: per for p, per in ledger_figures((snap.to_dict() or {}).get("billed")).items() if p in figures}
            if kept != figures:
                ctx.report("ledger", f"{col.BILLING_LEDGER}/{uid}.billed ({year})",
                           f"differs from {ref.path}, which is kept (invoicing reads it)")
            continue
        move.creates[year] = {"userId": uid, "year": year, "billed": ledger_fields(figures),
                              "updatedAt": ctx.now, "migratedAt": ctx.now}
    return move


def _add(ctx: Context, batch: Any, move: Move) -> None:
    from google.cloud.firestore import DELETE_FIELD

    for year, doc in move.creates.items():
        batch.create(_years(ctx, move.uid).document(year), doc)
    batch.update(move.root.reference, {"billed": DELETE_FIELD},
                 option=ctx.db.write_option(last_update_time=move.root.update_time))


def _commit(ctx: Context, moves: list[Move]) -> None:
    if ctx.dry_run:
        _done(ctx, moves)  # counted, not written
        return
    chunk: list[Move] = []
    for move in moves:
        if chunk and sum(m.writes for m in chunk) + move.writes > BATCH_LIMIT:
            _commit_chunk(ctx, chunk)
            chunk = []
        chunk.append(move)
    if chunk:
        _commit_chunk(ctx, chunk)


def _commit_chunk(ctx: Context, chunk: list[Move]) -> None:
    from google.api_core import exceptions as gexc

    batch = ctx.db.batch()
    for move in chunk:
        _add(ctx, batch, move)
    try:
        batch.commit()
    except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Aborted):
        for move in chunk:  # one of them changed meanwhile: each on its own, read again
            _one(ctx, move.uid)
        return
    ctx.writer.commits += 1
    _done(ctx, chunk)


def _done(ctx: Context, moves: list[Move]) -> None:
    for move in moves:
        ctx.counts["moved"] += 1
        ctx.counts["year-documents"] += len(move.creates)
        ctx.writer.writes += move.writes


def _one(ctx: Context, uid: str) -> None:
    """Read one user's ledger again and move it in a batch of its own (retried while it changes)."""
    from google.api_core import exceptions as gexc

    for _ in range(RETRIES):
        root = ctx.db.collection(col.BILLING_LEDGER).document(uid).get()
        by_year = _legacy(ctx, root) if root.exists else None
        if by_year is None:
            ctx.counts["changed-meanwhile"] += 1
            return
        move = _plan(ctx, uid, root, by_year, _snapshots(ctx, [_years(ctx, uid).document(y) for y in by_year]))
        batch = ctx.db.batch()
        _add(ctx, batch, move)
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Aborted):
            continue
        ctx.writer.commits += 1
        ctx.counts["changed-meanwhile"] += 1
        _done(ctx, [move])
        return
    raise RuntimeError(f"could not move the billing ledger of {uid}: it kept changing")
