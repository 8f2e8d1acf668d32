"""Margin per assistant and month: provider cost beside billed revenue. Pure: no I/O, no clock.

Provider cost, per usage event, in exact `Decimal` USD (every figure is a token count or a
decimal time a finite decimal price, so no division ever rounds; a local context traps any
inexact step instead of rounding it):

- OpenAI `response` (a Realtime `response.done`): priced with the call model's prices in the
  table version in force on the event's date. Input text, audio and image tokens each at their
  rate, their cached share (`cachedTokensDetails`, a subset of each) at the cached rate; output
  text and audio at theirs. Tokens a response does not break down (totals larger than the sum
  of their details) are priced at the dearest rate of their direction, and cached tokens whose
  modality is not reported get no discount: the cost is then an upper bound, never an
  understatement, and the event counts as `undetailed`.
- OpenAI `transcription` (the caller's speech): the transcription model's own usage, by tokens
  (audio input, text input, text output; undetailed input at the dearer input rate) or, for a
  model billed by duration (whisper-1), seconds x the price a minute / 60.
- OpenAI `call` (the call's length): no charge of its own (OpenAI bills tokens), cost 0.
- vapi: the call's own reported cost (`vapi.cost`, USD), as vapi charges it.
An event that cannot be priced (no usage reported, a model the version in force does not list,
no vapi cost, a time before the first version) costs 0 and is counted as `unpriced`: the margin
is then overstated by what those events cost, and the report says how many there are.

Revenue per (assistant, month), in the invoice currency: what invoices billed for that usage
period (their lines with that `usagePeriod`, whichever invoice carried them; a `carried` invoice
billed nothing, a `void` one billed its minutes but collects nothing, reported as `voided`), plus,
for counted minutes no invoice has billed yet, the estimate at the period's rate card, flagged
`estimated`. Minutes are the counters' figures at the period's card, as invoicing computes them.

Money reaches cents once, at the report's edge: each total (revenue, cost) is its exact sum
rounded half-up (ROUND_HALF_UP: halves away from zero, as invoices round) to the cent, and the
lines get whole cents that add up to it exactly (largest remainder, as invoice lines do), so no
line is a cent or more from its exact figure. Margin = revenue - cost in cents, per line and in
total, so the table adds up across and down; the exact cost is also given in USD. A line whose
revenue is not in usd (a rate card or invoice in another currency) is reported but not comparable:
no margin, kept out of the totals, never mixed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction
from typing import Any

from pydantic import ValidationError

from simplytalk.models import RealtimeUsage
from simplytalk.pricing import RateCard, UsageFigures, format_minutes, round_half_up, round_lines
from simplytalk.provider_prices import PriceTable, RealtimePrices, TranscriptionPrices

ROUNDING = ("half-up (ROUND_HALF_UP) to the cent, once per total; lines allocated by largest remainder "
            "to add up to the totals; margin = revenue - cost")
# Exact arithmetic: 60 digits is far beyond any figure here; anything inexact raises, never rounds.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])
_MILLION = Decimal(1_000_000)


# -- provider cost of one event ----------------------------------------------------------------

@dataclass(frozen=True)
class EventCost:
    usd: Decimal  # 0 when unpriced
    priced: bool
    undetailed: bool = False  # part of it priced at the dearest rate: an upper bound
    version_id: str | None = None
    reason: str | None = None  # why it is unpriced


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def response_cost(usage: RealtimeUsage, prices: RealtimePrices) -> tuple[Decimal, bool]:
    """One Realtime response: exact USD, and whether part of it was priced at the dearest rate."""
    inp, out = usage.input_token_details, usage.output_token_details
    cached = inp.cached_tokens_details
    c_text, c_audio, c_image = (min(cached.text_tokens, inp.text_tokens), min(cached.audio_tokens, inp.audio_tokens),
                                min(cached.image_tokens, inp.image_tokens))
    with localcontext(_EXACT):
        per_million = (
            (inp.text_tokens - c_text) * prices.text_input + c_text * prices.cached_text_input
            + (inp.audio_tokens - c_audio) * prices.audio_input + c_audio * prices.cached_audio_input
            + (inp.image_tokens - c_image) * prices.image_input + c_image * prices.cached_image_input
            + out.text_tokens * prices.text_output + out.audio_tokens * prices.audio_output)
        rest_in = usage.input_tokens - (inp.text_tokens + inp.audio_tokens + inp.image_tokens)
        rest_out = usage.output_tokens - (out.text_tokens + out.audio_tokens)
        if rest_in > 0:
            per_million += rest_in * max(prices.text_input, prices.audio_input, prices.image_input)
        if rest_out > 0:
            per_million += rest_out * max(prices.text_output, prices.audio_output)
        undetailed = rest_in > 0 or rest_out > 0 or inp.cached_tokens > c_text + c_audio + c_image
        return per_million / _MILLION, undetailed


def transcription_cost(usage: Mapping[str, Any], prices: TranscriptionPrices) -> tuple[Decimal, bool] | None:
    """One input transcription (the stored camelCase usage), or None when the model's prices cannot
    price this kind of usage (tokens for a model billed by the minute, or the other way round)."""
    with localcontext(_EXACT):
        if usage.get("type") == "duration":
            if prices.per_minute is None:
                return None
            seconds = usage.get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds >= 0:
                return None
            return Decimal(str(seconds)) * (prices.per_minute / 60), False
        if not prices.by_tokens:
            return None
        assert prices.audio_input is not None and prices.text_input is not None and prices.text_output is not None
        details = usage.get("inputTokenDetails") or {}
        text, audio = _n(details.get("textTokens")), _n(details.get("audioTokens"))
        rest = _n(usage.get("inputTokens")) - text - audio
        per_million = (audio * prices.audio_input + text * prices.text_input
                       + _n(usage.get("outputTokens")) * prices.text_output)
        if rest > 0:
            per_million += rest * max(prices.audio_input, prices.text_input)
        return per_million / _MILLION, rest > 0


def vapi_cost(value: Any) -> Decimal | None:
    """vapi's reported cost of a call (decimal text, USD), or None when it is absent or not a cost."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _unpriced(reason: str, version: str | None = None) -> EventCost:
    return EventCost(Decimal(0), False, version_id=version, reason=reason)


def event_cost(data: Mapping[str, Any], table: PriceTable) -> EventCost:
    """The provider cost of one stored usage event (the `usageEvents` document's fields)."""
    provider = data.get("provider")
    if provider == "vapi":
        cost = vapi_cost((data.get("vapi") or {}).get("cost"))
        return _unpriced("vapi reported no cost") if cost is None else EventCost(cost, True)
    if provider != "openai":
        return _unpriced(f"unknown provider {provider!r}")
    kind = data.get("kind") or ("response" if data.get("usage") is not None else "call")
    if kind == "call":
        return EventCost(Decimal(0), True)  # the call's length: OpenAI bills its responses' tokens
    occurred = data.get("occurredAt")
    if not isinstance(occurred, dt.datetime) or occurred.tzinfo is None:
        return _unpriced("no occurredAt")
    version = table.version_at(occurred)
    if version is None:
        return _unpriced("before the first price table version")
    model = data.get("model")
    try:
        if kind == "response":
            prices = version.realtime.get(model) if isinstance(model, str) else None
            if prices is None:
                return _unpriced(f"no price for Realtime model {model!r}", version.id)
            if not isinstance(data.get("usage"), dict):
                return _unpriced("no usage reported", version.id)
            usd, undetailed = response_cost(RealtimeUsage.model_validate(data["usage"]), prices)
            return EventCost(usd, True, undetailed, version.id)
        if kind == "transcription":
            t_prices = version.transcription.get(model) if isinstance(model, str) else None
            if t_prices is None:
                return _unpriced(f"no price for transcription model {model!r}", version.id)
            usage = data.get("transcription")
            priced = transcription_cost(usage, t_prices) if isinstance(usage, dict) else None
            if priced is None:
                return _unpriced("no transcription usage this model's prices can price", version.id)
            return EventCost(priced[0], True, priced[1], version.id)
    except (ValidationError, ArithmeticError) as exc:
        return _unpriced(f"usage cannot be priced: {type(exc).__name__}", version.id)
    return _unpriced(f"unknown kind {kind!r}", version.id)


# -- one assistant's month ---------------------------------------------------------------------

def line_minutes(line: Mapping[str, Any]) -> Fraction:
    """An invoice line's exact minutes (`minutesExact` "n/d"; older lines: the decimal `minutes`)."""
    for key in ("minutesExact", "minutes"):
        value = line.get(key)
        if isinstance(value, str) and value:
            try:
                return Fraction(value)
            except (ValueError, ZeroDivisionError):
                continue
    return Fraction(0)


@dataclass
class AssistantMonth:
    """What is known of one (user, assistant) in one period, gathered before pricing."""

    user_id: str
    assistant_id: str
    provider: str | None = None
    figures: UsageFigures = field(default_factory=UsageFigures)  # the counters' figures for the period
    invoiced_cents: int = 0
    voided_cents: int = 0
    invoiced_minutes: Fraction = Fraction(0)
    invoice_currencies: set[str] = field(default_factory=set)
    cost_usd: Decimal = Decimal(0)
    events: int = 0
    unpriced_events: int = 0
    undetailed_events: int = 0
    versions: set[str] = field(default_factory=set)
    unpriced_reasons: dict[str, int] = field(default_factory=dict)

    def add_event(self, cost: EventCost, provider: str | None = None) -> None:
        self.events += 1
        self.provider = self.provider or provider
        with localcontext(_EXACT):
            self.cost_usd += cost.usd
        self.unpriced_events += 0 if cost.priced else 1
        self.undetailed_events += 1 if cost.undetailed else 0
        if cost.version_id:
            self.versions.add(cost.version_id)
        if not cost.priced:
            reason = cost.reason or "unknown"
            self.unpriced_reasons[reason] = self.unpriced_reasons.get(reason, 0) + 1

    def add_invoice_line(self, line: Mapping[str, Any], status: str | None, currency: str | None) -> None:
        """A line of an invoice that bills this assistant's usage of the period."""
        if status == "carried":  # billed nothing: the next invoice bills that usage again
            return
        self.invoiced_minutes += line_minutes(line)
        amount = line.get("amount")
        cents = amount if isinstance(amount, int) and not isinstance(amount, bool) else 0
        if status == "void":
            self.voided_cents += cents
        else:
            self.invoiced_cents += cents
        self.invoice_currencies.add(currency or "usd")
        self.provider = self.provider or (line.get("provider") if isinstance(line.get("provider"), str) else None)


# -- the report --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MarginLine:
    user_id: str
    assistant_id: str
    provider: str
    minutes: Fraction
    currency: str | None  # the revenue's currency (None: mixed currencies)
    comparable: bool  # revenue in usd, beside a usd cost
    revenue_cents: int | None  # None: mixed currencies
    invoiced_cents: int
    estimated_cents: int
    voided_cents: int
    estimated: bool
    cost_cents: int
    cost_usd: Decimal
    margin_cents: int | None
    events: int
    unpriced_events: int
    undetailed_events: int


@dataclass(frozen=True)
class MarginTotals:
    minutes: Fraction
    revenue_cents: int
    invoiced_cents: int
    estimated_cents: int
    voided_cents: int
    cost_cents: int
    cost_usd: Decimal
    margin_cents: int
    estimated: bool
    events: int
    unpriced_events: int
    undetailed_events: int
    not_comparable: int  # lines left out of the totals


@dataclass(frozen=True)
class MarginReport:
    period: str
    user_id: str | None
    rate_card_id: str
    lines: list[MarginLine]
    totals: MarginTotals
    price_versions: list[str]
    unpriced_reasons: dict[str, int] = field(default_factory=dict)  # why events went unpriced: how many


def margin_report(period: str, card: RateCard, months: Iterable[AssistantMonth],
                  user_id: str | None = None) -> MarginReport:
    """Price each assistant's month and round once at the edge (see the module's docstring)."""
    rows = sorted(months, key=lambda m: (m.user_id, m.assistant_id))
    minutes = [m.figures.minutes(card) for m in rows]
    estimate_minutes = [max(Fraction(0), mins - m.invoiced_minutes) for m, mins in zip(rows, minutes, strict=True)]
    exact_estimate = [e * Fraction(card.cents_per_minute) for e in estimate_minutes]
    currencies = [m.invoice_currencies | ({card.currency} if e > 0 else set()) or {card.currency}
                  for m, e in zip(rows, estimate_minutes, strict=True)]
    comparable = [c == {"usd"} for c in currencies]
    exact_cost = [Fraction(m.cost_usd) * 100 for m in rows]
    idx = [i for i, ok in enumerate(comparable) if ok]
    total_cost, cost_alloc = round_lines([exact_cost[i] for i in idx])
    total_estimate, estimate_alloc = round_lines([exact_estimate[i] for i in idx])
    cost_cents = {i: round_half_up(exact_cost[i]) for i in range(len(rows))}
    estimate_cents = {i: round_half_up(exact_estimate[i]) for i in range(len(rows))}
    cost_cents.update(zip(idx, cost_alloc, strict=True))
    estimate_cents.update(zip(idx, estimate_alloc, strict=True))
    lines = []
    for i, m in enumerate(rows):
        single = len(currencies[i]) == 1
        revenue = m.invoiced_cents + estimate_cents[i] if single else None
        lines.append(MarginLine(
            user_id=m.user_id, assistant_id=m.assistant_id, provider=m.provider or "unknown",
            minutes=minutes[i], currency=next(iter(currencies[i])) if single else None, comparable=comparable[i],
            revenue_cents=revenue, invoiced_cents=m.invoiced_cents, estimated_cents=estimate_cents[i],
            voided_cents=m.voided_cents, estimated=estimate_minutes[i] > 0, cost_cents=cost_cents[i],
            cost_usd=m.cost_usd, margin_cents=revenue - cost_cents[i] if comparable[i] and revenue is not None
            else None, events=m.events, unpriced_events=m.unpriced_events, undetailed_events=m.undetailed_events))
    counted = [lines[i] for i in idx]
    invoiced = sum(line.invoiced_cents for line in counted)
    with localcontext(_EXACT):
        cost_usd = sum((line.cost_usd for line in counted), Decimal(0))
    totals = MarginTotals(
        minutes=sum((line.minutes for line in counted), Fraction(0)), revenue_cents=invoiced + total_estimate,
        invoiced_cents=invoiced, estimated_cents=total_estimate,
        voided_cents=sum(line.voided_cents for line in counted), cost_cents=total_cost, cost_usd=cost_usd,
        margin_cents=invoiced + total_estimate - total_cost, estimated=any(line.estimated for line in counted),
        events=sum(line.events for line in counted), unpriced_events=sum(line.unpriced_events for line in counted),
        undetailed_events=sum(line.undetailed_events for line in counted),
        not_comparable=len(rows) - len(idx))
    versions = sorted(set().union(*(m.versions for m in rows))) if rows else []
    reasons: dict[str, int] = {}
    for m in rows:
        for reason, n in m.unpriced_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    return MarginReport(period, user_id, card.id, lines, totals, versions, dict(sorted(reasons.items())))


# -- JSON ----------------------------------------------------------------------------------------

def usd_text(value: Decimal) -> str:
    """An exact USD amount as plain decimal text: "0.012345", "12", "0"."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _money(cents: int | None, currency: str | None) -> dict[str, Any] | None:
    return None if cents is None or currency is None else {"amount": cents, "currency": currency}


def line_json(line: MarginLine) -> dict[str, Any]:
    return {
        "userId": line.user_id, "assistantId": line.assistant_id, "provider": line.provider,
        "minutes": format_minutes(line.minutes),
        "revenue": _money(line.revenue_cents, line.currency),
        "invoicedRevenue": line.invoiced_cents, "estimatedRevenue": line.estimated_cents,
        "voidedRevenue": line.voided_cents, "estimated": line.estimated,
        "providerCost": {"amount": line.cost_cents, "currency": "usd"}, "providerCostUsd": usd_text(line.cost_usd),
        "margin": _money(line.margin_cents, "usd"), "comparable": line.comparable,
        "events": line.events, "unpricedEvents": line.unpriced_events, "undetailedEvents": line.undetailed_events,
    }


def report_json(report: MarginReport) -> dict[str, Any]:
    t = report.totals
    return {
        "period": report.period, "userId": report.user_id, "currency": "usd", "rateCardId": report.rate_card_id,
        "priceVersions": report.price_versions, "unpricedReasons": report.unpriced_reasons, "rounding": ROUNDING,
        "assistants": [line_json(line) for line in report.lines],
        "totals": {
            "minutes": format_minutes(t.minutes),
            "revenue": {"amount": t.revenue_cents, "currency": "usd"},
            "invoicedRevenue": t.invoiced_cents, "estimatedRevenue": t.estimated_cents,
            "voidedRevenue": t.voided_cents, "estimated": t.estimated,
            "providerCost": {"amount": t.cost_cents, "currency": "usd"}, "providerCostUsd": usd_text(t.cost_usd),
            "margin": {"amount": t.margin_cents, "currency": "usd"},
            "events": t.events, "unpricedEvents": t.unpriced_events, "undetailedEvents": t.undetailed_events,
            "notComparable": t.not_comparable,
        },
    }
