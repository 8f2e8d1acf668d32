"""Monthly invoicing: one invoice per user and period, exactly once.

Per user, one atomic batch creates `invoices/{uid}_{period}` (a deterministic
id: a rerun's create fails, so no duplicate) and moves the user's ledger (what
has been billed, per period and assistant) forward. The ledger is kept per
calendar year, `billingLedger/{uid}/years/{YYYY}` (`billed.{YYYY-MM}.{aid}`, at
most 12 periods a document), and `billingLedger/{uid}` keeps lastInvoiceId and
updatedAt. Every ledger document the batch writes carries a precondition on the
update time it was read at (or is created, when it did not exist), the root
included, so two runs at once cannot both bill the same usage. What an invoice
bills is the counters' figures minus the ledger: its own period's usage plus
late usage for earlier periods (last December's, in January, goes to the
previous year's document). A `billed` map left in the root document from before
the year roll-over still counts for years that have no year document yet; the
first invoice to write such a year carries its figures over, and migration 004
moves the rest.

The run pages through `users` by document id (never the whole collection in
memory) and records its cursor and counts in `invoiceRuns/{period}` after each
page, so a crashed run resumes where it stopped; resuming or rerunning never
bills twice, because each user's step is idempotent on its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simplytalk import collections as col
from simplytalk import logs
from simplytalk.billing import RateCard, UsageFigures, format_minutes
from simplytalk.clock import rfc3339
from simplytalk.invoicing import (
    MINIMUM_CHARGE_CENTS,
    PricedInvoice,
    below_minimum,
    card_for,
    effective_billed,
    ledger_year,
    ledger_years_after,
    price,
    unbilled,
)
from simplytalk.period import Period
from simplytalk.services.aggregation import FIGURE_FIELDS, read_aggregate

if TYPE_CHECKING:
    from google.cloud.firestore import Client

USERS_PAGE = 300
CARRIED_REASON = (f"under Stripe's minimum charge ({MINIMUM_CHARGE_CENTS['usd']} US cents): "
                  "carried to the next invoice")
log = logs.get_logger("invoicing")


def previous_period(now: dt.datetime) -> str:
    return str(Period.of(now).previous())


def invoice_id(uid: str, period: str) -> str:
    return f"{uid}_{period}"


def _figures(data: Any) -> UsageFigures:
    if not isinstance(data, dict):
        return UsageFigures()
    return UsageFigures(*(int(data.get(name) or 0) for name in FIGURE_FIELDS))


def ledger_figures(billed: Any) -> dict[str, dict[str, UsageFigures]]:
    """A ledger document's `billed` map (period -> assistant -> figure fields) as figures."""
    if not isinstance(billed, dict):
        return {}
    return {period: {aid: _figures(f) for aid, f in (per if isinstance(per, dict) else {}).items()}
            for period, per in billed.items()}


def ledger_fields(billed: dict[str, dict[str, UsageFigures]]) -> dict[str, dict[str, dict[str, int]]]:
    return {period: {aid: dict(zip(FIGURE_FIELDS, f.astuple(), strict=True)) for aid, f in per.items()}
            for period, per in billed.items()}


def read_ledger(db: Client, uid: str, years: list[str]) -> tuple[Any, dict[str, Any]]:
    """The root ledger document and the given year documents (snapshots, missing ones too), in one
    round trip."""
    root = db.collection(col.BILLING_LEDGER).document(uid)
    year_refs = [root.collection(col.LEDGER_YEARS).document(year) for year in years]
    snaps = {snap.reference.path: snap for snap in db.get_all([root, *year_refs])}
    return snaps[root.path], {ref.id: snaps[ref.path] for ref in year_refs}


def invoice_document(uid: str, period: str, priced: PricedInvoice, period_card: RateCard,
                     now: dt.datetime) -> dict[str, Any]:
    return {
        "id": invoice_id(uid, period),
        "userId": uid,
        "period": period,
        "status": "draft",
        "currency": priced.currency,
        "total": priced.total,
        "lines": [{"assistantId": line.assistant_id, "provider": line.provider,
                   "usagePeriod": line.usage_period, "minutes": format_minutes(line.minutes),
                   "minutesExact": f"{line.minutes.numerator}/{line.minutes.denominator}",
                   "amount": line.amount, "rateCardId": line.rate_card_id} for line in priced.lines],
        "rateCardId": period_card.id,
        "stripeInvoiceId": None,
        "hostedInvoiceUrl": None,
        "createdAt": now,
        "updatedAt": now,
    }


@dataclass
class UserOutcome:
    uid: str
    outcome: str  # created | carried | exists | no-usage | would-create | failed
    total: int = 0
    invoice: dict[str, Any] | None = None  # the document just created (spares settle a read)
    without_profile: bool = False  # billed though users/{uid} does not exist


def owners_page(db: Client, cursor: str | None, size: int) -> tuple[list[str], set[str]]:
    """The next `size` user ids after `cursor`, in id order, from `users` and from the usage
    counters (`tokenUsage`): usage whose owner has no users document is billed too. Returns
    the ids and those of them that have a users document."""
    def ids(collection: str) -> list[str]:
        query = db.collection(collection).order_by("__name__")
        if cursor:
            query = query.start_after({"__name__": cursor})
        return [snap.id for snap in query.select([]).limit(size).stream()]

    profiles = ids(col.USERS)
    owners = ids(col.TOKEN_USAGE)
    # each list is the first `size` ids of its collection, so the first `size` of their union are exact
    page = sorted(set(profiles) | set(owners))[:size]
    return page, set(profiles)


def invoice_user(db: Client, uid: str, period: str, cards: list[RateCard], now: dt.datetime,
                 dry_run: bool = False) -> UserOutcome:
    from google.api_core import exceptions as gexc

    invoice_ref = db.collection(col.INVOICES).document(invoice_id(uid, period))
    for _ in range(10):
        if invoice_ref.get().exists:
            return UserOutcome(uid, "exists")
        aggregate = read_aggregate(db, uid)
        years = sorted({ledger_year(p) for p in aggregate.period_assistants if p <= period})
        if not years:
            return UserOutcome(uid, "no-usage")
        ledger_snap, year_snaps = read_ledger(db, uid, years)
        billed = effective_billed(
            ledger_figures((ledger_snap.to_dict() or {}).get("billed")),
            {y: ledger_figures((s.to_dict() or {}).get("billed")) if s.exists else None
             for y, s in year_snaps.items()})
        items = unbilled(aggregate.period_assistants, billed, aggregate.providers, period)
        if not items:
            return UserOutcome(uid, "no-usage")
        priced = price(items, lambda p: card_for(p, cards))
        if dry_run:
            return UserOutcome(uid, "would-create", priced.total)
        document = invoice_document(uid, period, priced, card_for(period, cards), now)
        if below_minimum(priced.total, priced.currency):
            # Stripe would not collect it: shown as carried, the ledger left alone, so the
            # next invoice bills this usage (as late usage of this period, at this period's card).
            document.update(status="carried", statusReason=CARRIED_REASON)
            try:
                invoice_ref.create(document)
            except gexc.AlreadyExists:
                continue
            return UserOutcome(uid, "carried", 0, document)
        batch = db.batch()
        batch.create(invoice_ref, document)
        for year, year_billed in ledger_years_after(billed, items, aggregate.period_assistants).items():
            snap = year_snaps[year]
            year_doc = {"userId": uid, "year": year, "billed": ledger_fields(year_billed),
                        "lastInvoiceId": invoice_ref.id, "updatedAt": now}
            if snap.exists:
                batch.update(snap.reference, year_doc, option=db.write_option(last_update_time=snap.update_time))
            else:
                batch.create(snap.reference, year_doc)
        ledger_doc = {"userId": uid, "lastInvoiceId": invoice_ref.id, "updatedAt": now}
        if ledger_snap.exists:
            batch.update(ledger_snap.reference, ledger_doc,
                         option=db.write_option(last_update_time=ledger_snap.update_time))
        else:
            batch.create(ledger_snap.reference, ledger_doc)
        try:
            batch.commit()
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.Aborted):
            continue  # another run got there first: look again
        return UserOutcome(uid, "created", priced.total, document)
    raise RuntimeError(f"could not invoice {uid} for {period}: too much contention")


@dataclass
class RunSummary:
    period: str
    dry_run: bool
    users: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    total_cents: int = 0
    resumed_from: str | None = None
    completed: bool = False

    failed: list[str] = field(default_factory=list)
    without_profile: list[str] = field(default_factory=list)

    def add(self, outcome: UserOutcome) -> None:
        self.users += 1
        self.counts[outcome.outcome] = self.counts.get(outcome.outcome, 0) + 1
        self.total_cents += outcome.total
        if outcome.outcome == "failed" and len(self.failed) < 500:
            self.failed.append(outcome.uid)
        if outcome.without_profile and len(self.without_profile) < 500:
            self.without_profile.append(outcome.uid)

    def as_doc(self) -> dict[str, Any]:
        return {"period": self.period, "users": self.users, "counts": self.counts,
                "totalCents": self.total_cents, "completed": self.completed, "failedUsers": self.failed,
                "usersWithoutProfile": self.without_profile}


def run_period(db: Client, period: str, cards: list[RateCard], now: Callable[[], dt.datetime],
               dry_run: bool = False, progress: Callable[[RunSummary], None] | None = None,
               page_size: int = USERS_PAGE, stop_after: float | None = None,
               settle: Callable[[str, dict[str, Any] | None], str] | None = None,
               workers: int = 8) -> RunSummary:
    """Invoice every user with unbilled usage up to `period`; resumes an unfinished run.

    With `stop_after` (seconds), returns before finishing once the budget is spent
    (summary.completed False): the caller continues it later. `settle(invoice_id, document)`
    runs after each user's invoice is created (document given) or found (None) (the Stripe step; it must be
    idempotent: a rerun calls it again for invoices a crash left half done). Users of a
    page are invoiced by `workers` threads; the cursor moves only after a whole page.
    """
    import time

    started = time.monotonic()
    run_ref = db.collection(col.INVOICE_RUNS).document(period)
    run_doc = (run_ref.get().to_dict() or {}) if not dry_run else {}
    cursor = run_doc.get("cursor") if not run_doc.get("completed") else None  # completed: check everyone again
    summary = RunSummary(period, dry_run, resumed_from=cursor)
    if cursor:
        summary.users = int(run_doc.get("users", 0))
        summary.counts = dict(run_doc.get("counts") or {})
        summary.total_cents = int(run_doc.get("totalCents", 0))
    elif not dry_run:
        run_ref.set({**summary.as_doc(), "startedAt": now(), "cursor": None})
    while True:
        page, profiles = owners_page(db, cursor, page_size)

        def one(uid: str, profiles: set[str] = profiles) -> UserOutcome:
            try:
                outcome = invoice_user(db, uid, period, cards, now(), dry_run)
                if uid not in profiles and outcome.outcome != "no-usage":
                    log.error("invoicing %s for %s: usage without a users document", uid, period,
                              extra={"fields": {"uid": uid, "period": period, "outcome": outcome.outcome}})
                    outcome.without_profile = True
                if settle and outcome.outcome in ("created", "exists"):
                    settle(invoice_id(uid, period), outcome.invoice)
                return outcome
            except Exception as exc:  # one user's problem must not stop the month's run
                log.error("invoicing %s for %s failed: %r", uid, period, exc,
                          extra={"fields": {"uid": uid, "period": period}})
                return UserOutcome(uid, "failed")

        if workers > 1 and len(page) > 1:
            with ThreadPoolExecutor(min(workers, len(page))) as pool:
                outcomes = list(pool.map(one, page))
        else:
            outcomes = [one(uid) for uid in page]
        for outcome in outcomes:
            summary.add(outcome)
        if page:
            cursor = page[-1]
        if not dry_run:
            run_ref.set({**summary.as_doc(), "cursor": cursor, "updatedAt": now()}, merge=True)
        if progress:
            progress(summary)
        if len(page) < page_size:
            break
        if stop_after is not None and time.monotonic() - started > stop_after:
            return summary
    summary.completed = True
    if not dry_run:
        run_ref.set({**summary.as_doc(), "cursor": None, "completedAt": now()}, merge=True)
    return summary


# -- reading invoices (billing API) ---------------------------------------------------

def invoice_json(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: data.get(k) for k in ("id", "userId", "period", "status", "statusReason", "currency", "total",
                                     "rateCardId", "stripeInvoiceId", "hostedInvoiceUrl", "amountDue", "amountPaid",
                                     "startingBalance")}
    out["lines"] = [{k: line.get(k) for k in ("assistantId", "provider", "usagePeriod", "minutes", "amount",
                                              "rateCardId")} for line in data.get("lines") or []]
    for key in ("createdAt", "updatedAt"):
        value = data.get(key)
        out[key] = rfc3339(value) if isinstance(value, dt.datetime) else None
    return out


def get_invoice(db: Client, uid: str, invoice: str) -> dict[str, Any]:
    from simplytalk.errors import NotFound

    snap = db.collection(col.INVOICES).document(invoice).get()
    data = snap.to_dict() if snap.exists else None
    if not data or data.get("userId") != uid:
        raise NotFound("invoice not found")
    return invoice_json(data)


def list_invoices(db: Client, uid: str, size: int,
                  token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    from google.cloud.firestore import Query
    from google.cloud.firestore_v1.base_query import FieldFilter

    from simplytalk.paging import decode_token, encode_token

    cursor = decode_token(token, ("period", "id"), ids=("id",))
    query = (db.collection(col.INVOICES).where(filter=FieldFilter("userId", "==", uid))
             .order_by("period", direction=Query.DESCENDING)
             .order_by("__name__", direction=Query.DESCENDING))
    if cursor:
        query = query.start_after({"period": cursor["period"], "__name__": cursor["id"]})
    docs = list(query.limit(size + 1).stream())
    items = [invoice_json(d.to_dict() or {}) for d in docs[:size]]
    next_token = None
    if len(docs) > size:
        next_token = encode_token({"period": items[-1]["period"], "id": items[-1]["id"]})
    return items, next_token


def stripe_settler(db: Client, client: Any,
                   now: Callable[[], dt.datetime]) -> Callable[[str, dict[str, Any] | None], str]:
    """`settle` for run_period: push a draft invoice to Stripe (idempotent)."""
    from simplytalk.services.payments import push_invoice, set_invoice_status

    def settle(invoice: str, known: dict[str, Any] | None) -> str:
        data = known if known is not None else (db.collection(col.INVOICES).document(invoice).get().to_dict() or {})
        if data.get("status") != "draft":
            return "settled"
        if data.get("total") == 0:
            set_invoice_status(db, invoice, "paid", {}, now())  # nothing to collect
            return "nothing-due"
        return push_invoice(db, client, data, now())

    return settle
