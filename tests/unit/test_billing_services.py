"""Rate cards, invoicing and the ledger on in-memory repositories: no emulator, no network."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from simplytalk.charges import card_for, effective_billed, ledger_years_after, unbilled
from simplytalk.errors import Conflict, InvalidInput, NotFound
from simplytalk.invoice import Invoice, InvoiceStatus, StatusRefused
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard, UsageFigures
from simplytalk.repositories.billable_usage import InMemoryUsage
from simplytalk.repositories.invoices import InMemoryInvoices, Ledger
from simplytalk.repositories.rate_cards import InMemoryRateCards
from simplytalk.services import invoicing as svc
from simplytalk.services.billing_deps import BillingDeps
from simplytalk.services.rate_cards import RateCardInput, add_card

OCT = dt.datetime(2026, 10, 12, 9, 30, tzinfo=dt.UTC)
NOV = dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.UTC)
DEC = dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC)
CARDS = [DEFAULT_RATE_CARD]  # 60 tokens a minute at 45 cents


def tokens(n: int) -> UsageFigures:
    return UsageFigures(total_tokens=n, input_tokens=n)


class Billing:
    """The fakes behind BillingDeps, and what the Stripe step was handed."""

    def __init__(self, invoices: InMemoryInvoices | None = None) -> None:
        self.invoices = invoices or InMemoryInvoices()
        self.usage = InMemoryUsage()
        self.cards = InMemoryRateCards()
        self.settled: list[Invoice] = []
        self.now = NOV

    def count(self, uid: str, period: str, assistant: str, n: int, profile: bool = True) -> None:
        self.usage.add(uid, period, assistant, tokens(n))
        self.invoices.usage_owners.add(uid)
        if profile:
            self.invoices.profiles.add(uid)

    def settle(self, invoice: Invoice) -> str:
        self.settled.append(invoice)
        return "pushed"

    def deps(self) -> BillingDeps:
        return BillingDeps(invoices=self.invoices, usage=self.usage, rate_cards=self.cards, clock=lambda: self.now,
                           settle=self.settle)


@pytest.fixture
def billing() -> Billing:
    return Billing()


def card(card_id: str, start: dt.date, cents: str, added: dt.datetime) -> RateCard:
    return RateCard(id=card_id, effective_from=start, tokens_per_minute=60, cents_per_minute=Decimal(cents),
                    added_at=added)


# -- rate cards ------------------------------------------------------------------------------------

def test_a_card_must_start_on_the_first_of_a_month_not_yet_begun() -> None:
    cards = InMemoryRateCards()
    for requested in ("2026-11-01", "2026-10-01", "2026-12-15"):
        with pytest.raises(InvalidInput) as refused:
            add_card(cards, RateCardInput.model_validate(
                {"effectiveFrom": requested, "tokensPerMinute": 60, "centsPerMinute": "50"}), "ops", NOV)
        assert [v.field for v in refused.value.details] == ["effectiveFrom"]
    assert cards.cards == {}

    added = add_card(cards, RateCardInput.model_validate({"tokensPerMinute": 60, "centsPerMinute": "50"}), "ops", NOV)

    assert added.effective_from == dt.date(2026, 12, 1) and added.added_at == NOV
    assert [c.id for c in cards.list()] == [DEFAULT_RATE_CARD.id, added.id]
    assert cards.created_by[added.id] == "ops"


def test_a_card_is_immutable_so_its_id_cannot_be_added_twice() -> None:
    cards = InMemoryRateCards()
    data = RateCardInput.model_validate({"id": "card-dec", "tokensPerMinute": 60, "centsPerMinute": "50"})
    add_card(cards, data, "ops", NOV)

    with pytest.raises(Conflict):
        add_card(cards, data, "ops", NOV + dt.timedelta(hours=1))


def test_the_newest_card_of_a_day_wins() -> None:
    cards = InMemoryRateCards()
    dec = dt.date(2026, 12, 1)
    cards.add(card("z-first", dec, "50", NOV), "ops")
    cards.add(card("a-second", dec, "55", NOV + dt.timedelta(minutes=5)), "ops")

    assert card_for("2026-12", cards.list()).id == "a-second"
    assert card_for("2026-11", cards.list()).id == DEFAULT_RATE_CARD.id


def test_cards_are_read_again_only_once_the_cache_is_older_than_asked() -> None:
    cards = InMemoryRateCards()
    cards.list(max_age=60)
    cards.list(max_age=60)
    assert cards.reads == 1
    cards.list()  # no max_age: always a fresh read
    assert cards.reads == 2


# -- invoicing --------------------------------------------------------------------------------------

def test_a_user_is_invoiced_once_per_period_however_often_the_run_repeats(billing: Billing) -> None:
    billing.count("ann", "2026-10", "a1", 1830)  # 30.5 min at 45 cents
    billing.count("ann", "2026-10", "a2", 100)

    first = svc.run_period(billing.deps(), "2026-10", CARDS)
    again = svc.run_period(billing.deps(), "2026-10", CARDS)

    assert first.counts == {"created": 1} and again.counts == {"exists": 1}
    invoice = billing.invoices.invoices["ann_2026-10"]
    assert invoice.total == 1448 and sum(line.amount for line in invoice.lines) == invoice.total
    assert [(line.assistant_id, line.minutes, line.amount) for line in invoice.lines] == [
        ("a1", Fraction(61, 2), 1373), ("a2", Fraction(5, 3), 75)]
    assert billing.invoices.commits == 1
    # the Stripe step got the entity both times (a rerun finishes invoices a crash left half done)
    assert [i.id for i in billing.settled] == ["ann_2026-10", "ann_2026-10"]
    assert billing.invoices.runs["2026-10"]["completed"] is True


def test_late_usage_of_an_earlier_month_is_billed_at_its_own_card(billing: Billing) -> None:
    november_card = card("card-nov", dt.date(2026, 11, 1), "60", OCT)
    cards = [DEFAULT_RATE_CARD, november_card]
    billing.count("ann", "2026-10", "a1", 600)
    svc.run_period(billing.deps(), "2026-10", cards)
    billing.count("ann", "2026-10", "a1", 60)  # an October call reported in November
    billing.count("ann", "2026-11", "a1", 120)
    billing.now = DEC

    svc.run_period(billing.deps(), "2026-11", cards)

    november = billing.invoices.invoices["ann_2026-11"]
    assert [(line.usage_period, line.minutes, line.amount, line.rate_card_id) for line in november.lines] == [
        ("2026-10", 1, 45, DEFAULT_RATE_CARD.id), ("2026-11", 2, 120, "card-nov")]
    assert november.rate_card_id == "card-nov" and november.total == 165
    assert billing.invoices.invoices["ann_2026-10"].total == 450  # the closed invoice is untouched
    assert svc.run_period(billing.deps(), "2026-12", cards).counts == {"no-usage": 1}


def test_a_carried_invoice_leaves_the_ledger_alone_and_the_next_invoice_bills_it(billing: Billing) -> None:
    billing.count("bob", "2026-10", "b1", 60)  # 1 minute: 45 cents, under Stripe's 50

    october = svc.run_period(billing.deps(), "2026-10", CARDS)

    carried = billing.invoices.invoices["bob_2026-10"]
    assert october.counts == {"carried": 1} and october.total_cents == 0
    assert carried.status == InvoiceStatus.CARRIED and carried.total == 45 and carried.status_reason
    assert billing.invoices.billed("bob") == {} and billing.settled == []
    billing.count("bob", "2026-11", "b1", 120)
    billing.now = DEC

    svc.run_period(billing.deps(), "2026-11", CARDS)

    november = billing.invoices.invoices["bob_2026-11"]
    assert [(line.usage_period, line.amount) for line in november.lines] == [("2026-10", 45), ("2026-11", 90)]
    assert november.status == InvoiceStatus.DRAFT and billing.settled == [november]
    assert billing.invoices.billed("bob") == {"2026": {"2026-10": {"b1": tokens(60)}, "2026-11": {"b1": tokens(120)}}}


class RacingInvoices(InMemoryInvoices):
    """Holds each thread's first ledger read until both threads have read: both see the same ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=10)
        self.reads: Counter[str] = Counter()

    def ledger(self, uid: str, years: list[str]) -> Ledger:
        found = super().ledger(uid, years)
        name = threading.current_thread().name
        self.reads[name] += 1
        if self.reads[name] == 1:
            self.barrier.wait()
        return found


def test_two_runs_racing_bill_once() -> None:
    billing = Billing(RacingInvoices())
    billing.count("u", "2026-12", "a", 600)
    billing.count("u", "2027-01", "a", 300)

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda p: svc.invoice_user(billing.deps(), "u", p, CARDS, DEC).outcome,
                                 ["2026-12", "2027-01"]))

    assert outcomes in (["created", "created"], ["no-usage", "created"])
    billed = Counter((line.usage_period, line.minutes) for i in billing.invoices.invoices.values() for line in i.lines)
    assert billed == {("2026-12", 10): 1, ("2027-01", 5): 1}  # December billed once, by one of them
    assert billing.invoices.billed("u") == {"2026": {"2026-12": {"a": tokens(600)}},
                                            "2027": {"2027-01": {"a": tokens(300)}}}
    assert isinstance(billing.invoices, RacingInvoices) and sum(billing.invoices.reads.values()) == 3


def test_the_run_resumes_from_its_cursor(billing: Billing) -> None:
    for uid in ("u1", "u2", "u3", "u4"):
        billing.count(uid, "2026-10", "a", 600)

    class Crash(Exception):
        pass

    def crash_after_two(summary: svc.RunSummary) -> None:
        if summary.users >= 2:
            raise Crash

    with pytest.raises(Crash):
        svc.run_period(billing.deps(), "2026-10", CARDS, progress=crash_after_two, page_size=1, workers=1)
    assert billing.invoices.runs["2026-10"]["cursor"] == "u2"
    assert set(billing.invoices.invoices) == {"u1_2026-10", "u2_2026-10"}

    resumed = svc.run_period(billing.deps(), "2026-10", CARDS, page_size=1)

    assert resumed.completed and resumed.resumed_from == "u2"
    assert resumed.counts == {"created": 4} and resumed.users == 4 and resumed.total_cents == 4 * 450
    assert billing.invoices.commits == 4
    assert billing.invoices.runs["2026-10"]["cursor"] is None


def test_a_run_that_runs_out_of_time_stops_and_continues_later(billing: Billing) -> None:
    for uid in ("u1", "u2", "u3"):
        billing.count(uid, "2026-10", "a", 600)

    partial = svc.run_period(billing.deps(), "2026-10", CARDS, page_size=1, stop_after=0)
    assert not partial.completed and partial.users == 1

    rest = svc.run_period(billing.deps(), "2026-10", CARDS, page_size=2)
    assert rest.completed and rest.counts == {"created": 3}


def test_users_without_a_profile_are_billed_and_listed(billing: Billing) -> None:
    billing.count("ann", "2026-10", "a", 600)
    billing.count("ghost", "2026-10", "g", 600, profile=False)
    billing.invoices.profiles.add("idle")

    summary = svc.run_period(billing.deps(), "2026-10", CARDS)

    assert summary.counts == {"created": 2, "no-usage": 1}
    assert "ghost_2026-10" in billing.invoices.invoices
    assert summary.without_profile == ["ghost"]
    assert billing.invoices.runs["2026-10"]["usersWithoutProfile"] == ["ghost"]


def test_a_dry_run_writes_nothing(billing: Billing) -> None:
    billing.count("ann", "2026-10", "a", 600)

    summary = svc.run_period(billing.deps(), "2026-10", CARDS, dry_run=True)

    assert summary.counts == {"would-create": 1} and summary.total_cents == 450
    assert billing.invoices.invoices == {} and billing.invoices.runs == {} and billing.settled == []


def test_one_users_failure_does_not_stop_the_run(billing: Billing) -> None:
    billing.count("ann", "2026-10", "a", 600)
    billing.count("bob", "2026-10", "b", 600)

    def settle(invoice: Invoice) -> str:
        if invoice.user_id == "ann":
            raise RuntimeError("Stripe is down")
        return "pushed"

    summary = svc.run_period(billing.deps().settling(settle), "2026-10", CARDS)

    assert summary.counts == {"failed": 1, "created": 1} and summary.failed == ["ann"]


# -- reading invoices --------------------------------------------------------------------------------

def test_invoices_are_listed_newest_period_first_a_page_at_a_time(billing: Billing) -> None:
    for n, period in enumerate(["2026-07", "2026-08", "2026-09"]):
        billing.count("ann", period, "a", 600)
        billing.now = NOV + dt.timedelta(days=n)
        svc.run_period(billing.deps(), period, CARDS)

    first, token = svc.list_invoices(billing.deps(), "ann", 2, None)
    rest, last = svc.list_invoices(billing.deps(), "ann", 2, token)

    assert [i["period"] for i in first] == ["2026-09", "2026-08"] and token
    assert [i["period"] for i in rest] == ["2026-07"] and last is None
    assert svc.list_invoices(billing.deps(), "bob", 2, None) == ([], None)
    assert svc.get_invoice(billing.deps(), "ann", "ann_2026-08") == first[1]
    with pytest.raises(NotFound):
        svc.get_invoice(billing.deps(), "bob", "ann_2026-08")  # another user's is not found
    with pytest.raises(InvalidInput):
        svc.list_invoices(billing.deps(), "ann", 2, "not-a-token")


# -- the invoice ---------------------------------------------------------------------------------------

def invoice(status: InvoiceStatus = InvoiceStatus.DRAFT) -> Invoice:
    billing = Billing()
    billing.count("ann", "2026-10", "a1", 100)  # 5/3 minutes
    billing.count("ann", "2026-10", "a2", 1830)
    found = svc.invoice_user(billing.deps(), "ann", "2026-10", CARDS, NOV).invoice
    assert found is not None
    found.status = status
    return found


def test_invoice_transitions_refuse_to_move_back() -> None:
    draft = invoice()
    draft.move_to(InvoiceStatus.OPEN, DEC)
    draft.move_to(InvoiceStatus.FAILED)
    assert draft.status == InvoiceStatus.FAILED and draft.updated_at == DEC
    with pytest.raises(StatusRefused):
        draft.move_to(InvoiceStatus.OPEN)  # a late "open" after "failed"
    draft.move_to(InvoiceStatus.PAID)
    for later in InvoiceStatus:
        with pytest.raises(StatusRefused):
            draft.move_to(later)  # paid is final
    with pytest.raises(StatusRefused):
        invoice(InvoiceStatus.CARRIED).carry("again")
    assert InvoiceStatus.OPEN.after(InvoiceStatus.DRAFT) == InvoiceStatus.OPEN
    assert InvoiceStatus.VOID.after(InvoiceStatus.PAID) == InvoiceStatus.VOID


def test_statuses_never_move_back_nor_out_of_a_final_one() -> None:
    ranks = {"draft": 0, "open": 1, "failed": 2, "paid": 3, "void": 3, "carried": 3, "review": 3}
    for current in InvoiceStatus:
        for requested in InvoiceStatus:
            keep = ranks[requested] < ranks[current] or ranks[current] == 3
            assert current.after(requested) == (current if keep else requested)


def test_the_invoice_is_stored_with_display_minutes_that_are_never_read_back() -> None:
    original = invoice()
    doc = original.to_firestore()

    assert [(line["minutes"], line["minutesExact"]) for line in doc["lines"]] == [
        ("1.666667", "5/3"), ("30.5", "61/2")]
    assert doc["status"] == "draft" and doc["stripeInvoiceId"] is None and "statusReason" not in doc
    assert Invoice.from_firestore(doc) == original
    doc["lines"][0]["minutes"] = "999"  # only the exact figure is data
    assert Invoice.from_firestore(doc).lines[0].minutes == Fraction(5, 3)
    shown = original.to_json()
    assert shown["lines"][0] == {"assistantId": "a1", "provider": "openai", "usagePeriod": "2026-10",
                                 "minutes": "1.666667", "amount": 75, "rateCardId": DEFAULT_RATE_CARD.id}
    assert shown["createdAt"] == "2026-11-03T09:30:00Z" and shown["amountDue"] is None


def test_what_stripe_and_its_webhooks_added_survives_the_codec() -> None:
    data: dict[str, Any] = {**invoice().to_firestore(), "status": "open", "stripeInvoiceId": "in_1",
                            "hostedInvoiceUrl": "https://pay", "amountDue": 0, "amountPaid": 0,
                            "startingBalance": -10, "stripeKeyAttempt": 1, "stripeReissues": 2,
                            "replacedStripeInvoices": ["in_0"], "reviewReason": "x"}

    assert Invoice.from_firestore(data).to_firestore() == data


# -- the ledger merge, pure -------------------------------------------------------------------------------

def test_a_year_document_wins_over_the_legacy_map_for_its_own_year_only() -> None:
    legacy = {"2025-12": {"a": tokens(60)}, "2026-01": {"a": tokens(60)}}
    years: dict[str, Any] = {"2026": {"2026-01": {"a": tokens(120)}, "2025-11": {"a": tokens(1)}}, "2025": None}

    assert effective_billed(legacy, years) == {"2025-12": {"a": tokens(60)}, "2026-01": {"a": tokens(120)}}


def test_the_ledger_after_an_invoice_holds_the_counted_figures_per_year() -> None:
    billed = {"2026-12": {"a": tokens(600)}}
    current = {"2026-12": {"a": tokens(660), "b": tokens(5)}, "2027-01": {"a": tokens(300)}}
    items = unbilled(current, billed, {}, "2027-01")

    after = ledger_years_after(billed, items, current)

    assert after == {"2026": {"2026-12": {"a": tokens(660), "b": tokens(5)}}, "2027": {"2027-01": {"a": tokens(300)}}}
    assert ledger_years_after(after["2026"] | after["2027"], unbilled(current, after["2026"] | after["2027"], {},
                                                                       "2027-01"), current) == {}
