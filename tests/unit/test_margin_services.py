"""The margin report on in-memory repositories: no emulator, no network.

The October figures are tests/emulator/test_margin.py's, computed by hand there (shipped price
table, the default card: 60 tokens a minute at 45 cents)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import pytest
from simplytalk.errors import InvalidInput
from simplytalk.invoice import Invoice, InvoiceLine, InvoiceStatus
from simplytalk.margin import report_json
from simplytalk.pricing import DEFAULT_RATE_CARD, UsageFigures
from simplytalk.provider_prices import default_table
from simplytalk.realtime import response_usage, transcription_usage
from simplytalk.repositories.billable_usage import InMemoryUsage
from simplytalk.repositories.margin_sources import InMemoryMarginSources
from simplytalk.repositories.rate_cards import InMemoryRateCards
from simplytalk.services.billing_deps import MarginDeps
from simplytalk.services.margin import TooManyEvents, margin, parse_query

from tests.realtime_fakes import sdk_usage

OCT = dt.datetime(2026, 10, 20, 9, 0, tzinfo=dt.UTC)
NOV = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


class Month:
    """The fakes behind MarginDeps: events as the tap and the vapi webhook store them, the counted
    figures, invoices."""

    def __init__(self) -> None:
        self.sources = InMemoryMarginSources()
        self.usage = InMemoryUsage()
        self.cards = InMemoryRateCards()

    def deps(self) -> MarginDeps:
        return MarginDeps(sources=self.sources, usage=self.usage, rate_cards=self.cards, prices=default_table(),
                          clock=lambda: NOV)

    def response(self, event_id: str, uid: str, aid: str, model: str, usage: dict[str, Any],
                 when: dt.datetime = OCT) -> None:
        self.sources.events[event_id] = {"userId": uid, "assistantId": aid, "provider": "openai", "kind": "response",
                                         "callId": "call-oct", "model": model, "occurredAt": when,
                                         "usage": response_usage(usage), "responseStatus": "completed"}

    def transcription(self, event_id: str, uid: str, aid: str, model: str, usage: dict[str, Any]) -> None:
        self.sources.events[event_id] = {"userId": uid, "assistantId": aid, "provider": "openai",
                                         "kind": "transcription", "callId": "call-oct", "model": model,
                                         "occurredAt": OCT, "usage": None,
                                         "transcription": transcription_usage(usage)}

    def call_end(self, event_id: str, uid: str, aid: str, seconds: float) -> None:
        self.sources.events[event_id] = {"userId": uid, "assistantId": aid, "provider": "openai", "kind": "call",
                                         "callId": "call-oct", "model": "gpt-realtime-1.5", "occurredAt": OCT,
                                         "callSeconds": seconds}

    def vapi_call(self, event_id: str, uid: str, aid: str, millis: int, cost: float) -> None:
        self.sources.events[event_id] = {"userId": uid, "assistantId": aid, "provider": "vapi", "kind": "call",
                                         "occurredAt": OCT, "callSeconds": millis / 1000,
                                         "vapi": {"cost": cost, "callId": event_id}}

    def invoice(self, uid: str, status: InvoiceStatus, *lines: tuple[str, str, Fraction, int],
                period: str = "2026-10") -> None:
        self.sources.add_invoice(Invoice(
            id=f"{uid}_{period}", user_id=uid, period=period, currency="usd", total=sum(x[3] for x in lines),
            lines=[InvoiceLine(aid, provider, "2026-10", minutes, amount, DEFAULT_RATE_CARD.id)
                   for aid, provider, minutes, amount in lines],
            rate_card_id=DEFAULT_RATE_CARD.id, created_at=NOV, updated_at=NOV, status=status))


def tokens(n: int) -> UsageFigures:
    return UsageFigures(total_tokens=n, input_tokens=n)


def rows(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {a["assistantId"]: (a["minutes"], a["revenue"]["amount"], a["invoicedRevenue"], a["estimatedRevenue"],
                               a["estimated"], a["providerCost"]["amount"], a["providerCostUsd"],
                               a["margin"]["amount"], a["events"], a["unpricedEvents"])
            for a in body["assistants"]}


@pytest.fixture
def october() -> Month:
    """ann: a Realtime assistant (a turn, its transcription, the call's end, a late turn) and a vapi
    one, invoiced 68 + 900 before the late minute; bob: 1 minute, carried (under Stripe's minimum)."""
    m = Month()
    m.response("resp-1", "ann", "ann-rt", "gpt-realtime-1.5",
               sdk_usage(text=100, audio=500, cached_audio=200, out_text=20, out_audio=580))
    m.transcription("item-1", "ann", "ann-rt", "gpt-4o-transcribe", {
        "type": "tokens", "input_tokens": 600, "output_tokens": 30, "total_tokens": 630,
        "input_token_details": {"audio_tokens": 600, "text_tokens": 0}})
    m.call_end("call-oct", "ann", "ann-rt", 95.0)
    m.response("resp-late", "ann", "ann-rt", "gpt-realtime-1.5", sdk_usage(text=60), OCT + dt.timedelta(hours=1))
    m.vapi_call("vapi-call-1", "ann", "ann-phone", 90_500, 0.1234)
    m.response("resp-b", "bob", "bob-rt", "gpt-realtime-mini-2025-10-06", sdk_usage(text=50, out_text=10))
    m.usage.add("ann", "2026-10", "ann-rt", tokens(1260))
    m.usage.add("ann", "2026-10", "ann-phone", UsageFigures(vapi_call_millis=90_500), provider="vapi")
    m.usage.add("bob", "2026-10", "bob-rt", tokens(60))
    m.invoice("ann", InvoiceStatus.OPEN, ("ann-phone", "vapi", Fraction(181, 120), 68),
              ("ann-rt", "openai", Fraction(20), 900))
    m.invoice("bob", InvoiceStatus.CARRIED, ("bob-rt", "openai", Fraction(1), 45))
    return m


def test_a_month_with_both_providers_gives_the_hand_computed_revenue_cost_and_margin(october: Month) -> None:
    body = report_json(margin(october.deps(), "2026-10"))

    assert rows(body) == {
        "ann-phone": ("1.508333", 68, 68, 0, False, 13, "0.1234", 55, 1, 0),
        "ann-rt": ("21", 945, 900, 45, True, 5, "0.05166", 940, 4, 0),
        "bob-rt": ("1", 45, 0, 45, True, 0, "0.000054", 45, 1, 0),
    }
    assert {a["assistantId"]: (a["userId"], a["provider"]) for a in body["assistants"]} == {
        "ann-phone": ("ann", "vapi"), "ann-rt": ("ann", "openai"), "bob-rt": ("bob", "openai")}
    totals = body["totals"]
    assert (totals["revenue"], totals["providerCost"], totals["margin"]) == (
        {"amount": 1058, "currency": "usd"}, {"amount": 18, "currency": "usd"}, {"amount": 1040, "currency": "usd"})
    assert (totals["invoicedRevenue"], totals["estimatedRevenue"], totals["providerCostUsd"], totals["minutes"],
            totals["events"], totals["unpricedEvents"], totals["notComparable"]) == (
        968, 90, "0.175114", "23.508333", 6, 0, 0)
    assert body["period"] == "2026-10" and body["rateCardId"] == "default-2026-01"
    assert body["priceVersions"] == ["openai-2026-11-26"] and body["userId"] is None


def test_one_user_is_only_that_users_assistants(october: Month) -> None:
    body = report_json(margin(october.deps(), "2026-10", "bob"))

    assert list(rows(body)) == ["bob-rt"] and body["totals"]["margin"]["amount"] == 45 and body["userId"] == "bob"


def test_the_events_are_read_a_page_at_a_time_with_the_same_report(october: Month) -> None:
    whole = report_json(margin(october.deps(), "2026-10"))
    october.sources.pages = 0

    assert report_json(margin(october.deps(), "2026-10", page=2, workers=1)) == whole
    assert october.sources.pages == 4  # 6 events: 2 + 2 + 2 + an empty page


def test_an_uninvoiced_month_is_estimated_at_the_card_and_flagged() -> None:
    m = Month()
    m.response("turn", "cat", "cat-rt", "gpt-realtime-1.5", sdk_usage(text=10, audio=300, out_text=5, out_audio=285))
    m.vapi_call("vapi-now", "cat", "phone-1", 90_500, 0.1234)
    m.usage.add("cat", "2026-10", "cat-rt", tokens(600))
    m.usage.add("cat", "2026-10", "phone-1", UsageFigures(vapi_call_millis=90_500), provider="vapi")

    body = report_json(margin(m.deps(), "2026-10", "cat"))

    # 600 tokens = 10 min x 45 = 450; 90.5 s x 45 / 60 = 67.875: 517.875 -> 518 (the cent to the vapi line)
    # cost: 10x4 + 300x32 + 5x16 + 285x64 = 27960 per 1M -> 2.796 cents; vapi 12.34: 15.136 -> 15
    assert rows(body) == {
        "cat-rt": ("10", 450, 0, 450, True, 3, "0.02796", 447, 1, 0),
        "phone-1": ("1.508333", 68, 0, 68, True, 12, "0.1234", 56, 1, 0),
    }
    assert (body["totals"]["revenue"]["amount"], body["totals"]["providerCost"]["amount"],
            body["totals"]["margin"]["amount"], body["totals"]["estimated"]) == (518, 15, 503, True)


def test_a_carried_invoice_bills_nothing_and_a_void_one_shows_as_voided_revenue() -> None:
    m = Month()
    for uid in ("dan", "eve"):
        m.response(f"turn-{uid}", uid, f"{uid}-rt", "gpt-realtime-mini-2025-10-06", sdk_usage(text=1200))
        m.usage.add(uid, "2026-10", f"{uid}-rt", tokens(1200))  # 20 minutes = 900 cents
    m.invoice("dan", InvoiceStatus.CARRIED, ("dan-rt", "openai", Fraction(20), 900))
    m.invoice("eve", InvoiceStatus.VOID, ("eve-rt", "openai", Fraction(20), 900))

    lines = {line.assistant_id: line for line in margin(m.deps(), "2026-10").lines}

    carried, void = lines["dan-rt"], lines["eve-rt"]
    assert (carried.invoiced_cents, carried.voided_cents, carried.estimated_cents, carried.estimated) == (
        0, 0, 900, True)  # the next invoice bills that usage again: still an estimate
    assert (void.revenue_cents, void.invoiced_cents, void.voided_cents, void.estimated) == (0, 0, 900, False)


def test_late_usage_billed_by_a_later_invoice_is_the_months_revenue_and_other_months_are_not() -> None:
    m = Month()
    m.response("oct", "fay", "fay-rt", "gpt-realtime-mini-2025-10-06", sdk_usage(text=120))
    m.response("nov", "fay", "fay-rt", "gpt-realtime-mini-2025-10-06", sdk_usage(text=6000), NOV)
    m.usage.add("fay", "2026-10", "fay-rt", tokens(120))
    m.usage.add("fay", "2026-11", "fay-rt", tokens(6000))
    m.sources.invoices["fay_2026-11"] = {
        "userId": "fay", "period": "2026-11", "status": "open", "currency": "usd",
        "lines": [{"assistantId": "fay-rt", "usagePeriod": "2026-10", "minutesExact": "2/1", "amount": 90},
                  {"assistantId": "fay-rt", "usagePeriod": "2026-11", "minutesExact": "100/1", "amount": 4500}]}
    m.sources.invoices["fay_2026-09"] = {
        "userId": "fay", "period": "2026-09", "status": "open", "currency": "usd",
        "lines": [{"assistantId": "fay-rt", "usagePeriod": "2026-10", "minutesExact": "9/1", "amount": 405}]}

    [line] = margin(m.deps(), "2026-10").lines

    assert (line.minutes, line.invoiced_cents, line.estimated_cents, line.events) == (Fraction(2), 90, 0, 1)


@pytest.mark.parametrize(("period", "user_id", "field"), [
    (None, None, "period"), ("", None, "period"), ("2026-13", None, "period"), ("Oct 2026", None, "period"),
    ("2026-10", "a/b", "userId"), ("2026-10", "", "userId"),
])
def test_a_bad_period_or_user_id_is_invalid_input_naming_the_field(period: str | None, user_id: str | None,
                                                                   field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_query(period, user_id)

    assert [v.field for v in refused.value.details] == [field]


def test_a_good_query_is_answered_as_given() -> None:
    assert parse_query("2026-10", None) == ("2026-10", None)
    assert parse_query("2026-10", "ann") == ("2026-10", "ann")


def test_too_many_events_for_the_endpoint_is_refused(october: Month) -> None:
    with pytest.raises(TooManyEvents, match="more than 5 usage events"):
        margin(october.deps(), "2026-10", max_events=5, page=2)

    assert len(margin(october.deps(), "2026-10", max_events=6).lines) == 3  # at the limit: answered
    assert len(margin(october.deps(), "2026-10", "ann", max_events=5).lines) == 2  # narrowed by user


def test_an_empty_month_is_an_empty_report() -> None:
    body = report_json(margin(Month().deps(), "2026-09"))

    assert body["assistants"] == [] and body["totals"]["revenue"] == {"amount": 0, "currency": "usd"}
