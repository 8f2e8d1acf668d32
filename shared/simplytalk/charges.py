"""What an invoice charges (`charges`): pure, no I/O.

An invoice for user U and period P bills everything of U's usage in periods up
to P that no earlier invoice billed: P's own usage, plus late usage that
arrived for an already-invoiced period (priced with the card of the period the
usage belongs to, so every line can be recomputed exactly). The total is the
exact sum of minutes times rates, rounded half-up to the cent once; lines are
allocated from it by largest remainder, so they add up to the total exactly.

What has been billed is kept per calendar year (the ledger's year documents, at
most 12 periods each): a year's document, once it exists, is the whole record of
that year and wins over the legacy all-years `billed` map from before the year
roll-over, which only counts for years that have no document yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from simplytalk.period import Period
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard, UsageFigures, round_lines

if TYPE_CHECKING:
    from simplytalk.invoice import InvoiceLine

Figures = Mapping[str, Mapping[str, UsageFigures]]  # period -> assistant -> figures


def period_start(period: str) -> dt.date:
    return Period.parse(period).start


def card_for(period: str, cards: list[RateCard]) -> RateCard:
    """The card in effect on the first day of the period (cards are data, versioned by date).
    Two cards from the same day: the one added last wins."""
    start = period_start(period)
    eligible = [c for c in cards if c.effective_from <= start]
    if not eligible:
        return DEFAULT_RATE_CARD
    return max(eligible, key=card_order)


_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def card_order(card: RateCard) -> tuple[dt.date, dt.datetime, str]:
    return card.effective_from, card.added_at or _NEVER, card.id


@dataclass(frozen=True)
class Unbilled:
    usage_period: str
    assistant_id: str
    provider: str
    figures: UsageFigures


def unbilled(current: Figures, billed: Figures, providers: Mapping[str, str], upto: str) -> list[Unbilled]:
    """Usage counted now but not yet billed, for every period up to `upto`, in a stable order."""
    out = []
    for period in sorted(p for p in current if p <= upto):
        for aid in sorted(current[period]):
            delta = current[period][aid] - billed.get(period, {}).get(aid, UsageFigures())
            if delta.is_negative_anywhere():
                raise ValueError(f"billed more than counted for {aid} in {period}")
            if not delta.is_zero():
                out.append(Unbilled(period, aid, providers.get(aid, "openai"), delta))
    return out


def ledger_year(period: str) -> str:
    """The ledger year document a period's billed figures live in: "YYYY"."""
    return period[:4]


def effective_billed(legacy: Figures, years: Mapping[str, Figures | None]) -> dict[str, dict[str, UsageFigures]]:
    """What has been billed, per period and assistant. `years` maps each year document read to its
    `billed` (None: no such document); a year's document wins over `legacy` (the root's `billed` from
    before the year roll-over) for every period of its year, and holds only periods of its year."""
    out = {period: dict(per) for period, per in legacy.items() if years.get(ledger_year(period)) is None}
    for year, billed in years.items():
        for period, per in (billed or {}).items():
            if ledger_year(period) == year:
                out[period] = dict(per)
    return out


def ledger_years_after(billed: Figures, items: Sequence[Unbilled],
                       current: Figures) -> dict[str, dict[str, dict[str, UsageFigures]]]:
    """The year documents an invoice of `items` rewrites: year -> that year's whole `billed` (what had
    been billed for it, legacy figures carried over, with each item's period and assistant now at the
    counted figures: billed figures are absolute, never added up)."""
    out: dict[str, dict[str, dict[str, UsageFigures]]] = {
        year: {p: dict(per) for p, per in billed.items() if ledger_year(p) == year}
        for year in {ledger_year(item.usage_period) for item in items}}
    for item in items:
        per = out[ledger_year(item.usage_period)].setdefault(item.usage_period, {})
        per[item.assistant_id] = current[item.usage_period][item.assistant_id]
    return out


@dataclass(frozen=True)
class PricedLine:
    assistant_id: str
    provider: str
    usage_period: str
    minutes: Fraction
    exact_cents: Fraction
    amount: int
    rate_card_id: str


@dataclass(frozen=True)
class PricedInvoice:
    total: int
    currency: str
    lines: list[PricedLine]


def price(items: list[Unbilled], card_of: Callable[[str], RateCard]) -> PricedInvoice:
    exact: list[Fraction] = []
    minutes: list[Fraction] = []
    currencies = set()
    for item in items:
        card = card_of(item.usage_period)
        currencies.add(card.currency)
        m = item.figures.minutes(card)
        minutes.append(m)
        exact.append(m * Fraction(card.cents_per_minute))
    if len(currencies) > 1:
        raise ValueError(f"one invoice cannot mix currencies: {sorted(currencies)}")
    total, amounts = round_lines(exact)
    lines = [
        PricedLine(item.assistant_id, item.provider, item.usage_period, m, e, a,
                   card_of(item.usage_period).id)
        for item, m, e, a in zip(items, minutes, exact, amounts, strict=True)
    ]
    return PricedInvoice(total, currencies.pop() if currencies else DEFAULT_RATE_CARD.currency, lines)


# -- what Stripe is sent -------------------------------------------------------------

# Stripe does not collect a charge under its minimum (50 US cents): it marks such an invoice
# paid and moves the amount to the customer's balance. We never send one: the usage stays
# unbilled and is carried to the next invoice. https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
MINIMUM_CHARGE_CENTS = {"usd": 50}
MAX_STRIPE_LINES = 250  # line items one Stripe invoice may hold


def below_minimum(total: int, currency: str) -> bool:
    return 0 < total < MINIMUM_CHARGE_CENTS.get(currency, 0)


@dataclass(frozen=True)
class StripeLine:
    key: str  # in the line's metadata: how a retry finds the lines already added
    amount: int
    description: str
    metadata: dict[str, str]


def stripe_lines(lines: Sequence[InvoiceLine], limit: int = MAX_STRIPE_LINES) -> list[StripeLine]:
    """Our invoice's lines as Stripe line items: one per assistant and usage period, or, past
    Stripe's cap, one per usage period and provider (amounts add up to the same total)."""
    if len(lines) <= limit:
        return [StripeLine(str(i), line.amount,
                           f"{line.provider} assistant {line.assistant_id}: {line.minutes_display} min "
                           f"({line.usage_period})",
                           {"line": str(i), "assistantId": line.assistant_id, "usagePeriod": line.usage_period})
                for i, line in enumerate(lines)]
    groups: dict[tuple[str, str], list[InvoiceLine]] = {}
    for line in lines:
        groups.setdefault((line.usage_period, line.provider), []).append(line)
    if len(groups) > limit:
        raise ValueError(f"{len(groups)} usage periods and providers do not fit one Stripe invoice")
    return [StripeLine(f"g{i}", sum(x.amount for x in members),
                       f"{provider}: {len(members)} assistants ({period})",
                       {"line": f"g{i}", "usagePeriod": period, "assistants": str(len(members))})
            for i, ((period, provider), members) in enumerate(sorted(groups.items()))]
