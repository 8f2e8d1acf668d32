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

The services here take `BillingDeps` (repositories, the clock, the Stripe settlement) and
never a Firestore client: the documents are `repositories.invoices`'s; the invoice is the
entity `simplytalk.invoice.Invoice` from pricing to Stripe.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from simplytalk import logs
from simplytalk.charges import (
    MINIMUM_CHARGE_CENTS,
    below_minimum,
    card_for,
    ledger_year,
    ledger_years_after,
    price,
    unbilled,
)
from simplytalk.errors import NotFound
from simplytalk.invoice import Invoice, invoice_id
from simplytalk.paging import decode_token, next_page_token
from simplytalk.period import Period
from simplytalk.pricing import RateCard
from simplytalk.repositories.retry import optimistic
from simplytalk.services.billing_deps import BillingDeps

USERS_PAGE = 300
ATTEMPTS = 10  # reads of a user's ledger before giving up on them for this run (contention)
CARRIED_REASON = (f"under Stripe's minimum charge ({MINIMUM_CHARGE_CENTS['usd']} US cents): "
                  "carried to the next invoice")
log = logs.get_logger("invoicing")

def previous_period(now: dt.datetime) -> str:
    return str(Period.of(now).previous())


class Outcome(StrEnum):
    CREATED = "created"
    CARRIED = "carried"
    EXISTS = "exists"
    NO_USAGE = "no-usage"
    WOULD_CREATE = "would-create"
    FAILED = "failed"


@dataclass
class UserOutcome:
    uid: str
    outcome: Outcome
    total: int = 0
    invoice: Invoice | None = None  # the invoice created, carried or found (what the Stripe step takes)
    without_profile: bool = False  # billed though users/{uid} does not exist


def invoice_user(deps: BillingDeps, uid: str, period: str, cards: list[RateCard], now: dt.datetime,
                 dry_run: bool = False) -> UserOutcome:
    """The user's invoice for `period`: what the counters hold beyond the ledger, up to `period`."""

    def attempt() -> UserOutcome:
        existing = deps.invoices.get(invoice_id(uid, period))
        if existing is not None:
            return UserOutcome(uid, Outcome.EXISTS, invoice=existing)
        usage = deps.usage.counted(uid)
        years = sorted({ledger_year(p) for p in usage.period_assistants if p <= period})
        if not years:
            return UserOutcome(uid, Outcome.NO_USAGE)
        ledger = deps.invoices.ledger(uid, years)
        billed = ledger.billed()
        items = unbilled(usage.period_assistants, billed, usage.providers, period)
        if not items:
            return UserOutcome(uid, Outcome.NO_USAGE)
        priced = price(items, lambda p: card_for(p, cards))
        if dry_run:
            return UserOutcome(uid, Outcome.WOULD_CREATE, priced.total)
        invoice = Invoice.draft(uid, period, priced, card_for(period, cards), now)
        if below_minimum(priced.total, priced.currency):
            # Stripe would not collect it: shown as carried, the ledger left alone, so the
            # next invoice bills this usage (as late usage of this period, at this period's card).
            invoice.carry(CARRIED_REASON)
            deps.invoices.create(invoice)  # Again if a concurrent run created it: look again
            return UserOutcome(uid, Outcome.CARRIED, 0, invoice)
        deps.invoices.create_billed(invoice, ledger, ledger_years_after(billed, items, usage.period_assistants),
                                    now)  # Again when another run got there first
        return UserOutcome(uid, Outcome.CREATED, priced.total, invoice)

    return optimistic(attempt, attempts=ATTEMPTS, what=f"the invoice of {uid} for {period}")


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
        key = str(outcome.outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total_cents += outcome.total
        if outcome.outcome == Outcome.FAILED and len(self.failed) < 500:
            self.failed.append(outcome.uid)
        if outcome.without_profile and len(self.without_profile) < 500:
            self.without_profile.append(outcome.uid)

    def as_doc(self) -> dict[str, Any]:
        return {"period": self.period, "users": self.users, "counts": self.counts,
                "totalCents": self.total_cents, "completed": self.completed, "failedUsers": self.failed,
                "usersWithoutProfile": self.without_profile}


def run_period(deps: BillingDeps, period: str, cards: list[RateCard], dry_run: bool = False,
               progress: Callable[[RunSummary], None] | None = None, page_size: int = USERS_PAGE,
               stop_after: float | None = None, workers: int = 8) -> RunSummary:
    """Invoice every user with unbilled usage up to `period`; resumes an unfinished run.

    With `stop_after` (seconds), returns before finishing once the budget is spent
    (summary.completed False): the caller continues it later. With `deps.settle`, each invoice
    created or found is handed to it (the Stripe step; it must be idempotent: a rerun hands it
    again invoices a crash left half done). Users of a page are invoiced by `workers` threads;
    the cursor moves only after a whole page.
    """
    now = deps.clock
    started = time.monotonic()
    run_doc = (deps.invoices.run(period) or {}) if not dry_run else {}
    cursor = run_doc.get("cursor") if not run_doc.get("completed") else None  # completed: check everyone again
    summary = RunSummary(period, dry_run, resumed_from=cursor)
    if cursor:
        summary.users = int(run_doc.get("users", 0))
        summary.counts = dict(run_doc.get("counts") or {})
        summary.total_cents = int(run_doc.get("totalCents", 0))
    elif not dry_run:
        deps.invoices.save_run(period, {**summary.as_doc(), "startedAt": now(), "cursor": None}, merge=False)
    while True:
        page, profiles = deps.invoices.owners_page(cursor, page_size)

        def one(uid: str, profiles: set[str] = profiles) -> UserOutcome:
            try:
                outcome = invoice_user(deps, uid, period, cards, now(), dry_run)
                if uid not in profiles and outcome.outcome != Outcome.NO_USAGE:
                    log.error("invoicing %s for %s: usage without a users document", uid, period,
                              extra={"fields": {"uid": uid, "period": period, "outcome": str(outcome.outcome)}})
                    outcome.without_profile = True
                if deps.settle and outcome.invoice is not None and outcome.outcome in (Outcome.CREATED,
                                                                                       Outcome.EXISTS):
                    deps.settle(outcome.invoice)
                return outcome
            except Exception as exc:  # one user's problem must not stop the month's run
                log.error("invoicing %s for %s failed: %r", uid, period, exc,
                          extra={"fields": {"uid": uid, "period": period}})
                return UserOutcome(uid, Outcome.FAILED)

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
            deps.invoices.save_run(period, {**summary.as_doc(), "cursor": cursor, "updatedAt": now()})
        if progress:
            progress(summary)
        if len(page) < page_size:
            break
        if stop_after is not None and time.monotonic() - started > stop_after:
            return summary
    summary.completed = True
    if not dry_run:
        deps.invoices.save_run(period, {**summary.as_doc(), "cursor": None, "completedAt": now()})
    return summary


# -- reading invoices (billing API) ---------------------------------------------------

def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return invoice.to_json()


def get_invoice(deps: BillingDeps, uid: str, invoice: str) -> dict[str, Any]:
    found = deps.invoices.get(invoice)
    if found is None or found.user_id != uid:
        raise NotFound("invoice not found")
    return found.to_json()


def list_invoices(deps: BillingDeps, uid: str, size: int,
                  token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    cursor = decode_token(token, ("period", "id"), ids=("id",))
    after = (cursor["period"], cursor["id"]) if cursor else None
    found = deps.invoices.page(uid, size + 1, after)
    next_token = next_page_token(found, size, lambda invoice: {"period": invoice.period, "id": invoice.id})
    return [invoice.to_json() for invoice in found[:size]], next_token
