"""Pricing an invoice: pure, no I/O.

An invoice for user U and period P bills everything of U's usage in periods up
to P that no earlier invoice billed: P's own usage, plus late usage that
arrived for an already-invoiced period (priced with the card of the period the
usage belongs to, so every line can be recomputed exactly). The total is the
exact sum of minutes times rates, rounded half-up to the cent once; lines are
allocated from it by largest remainder, so they add up to the total exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from simplytalk.billing import DEFAULT_RATE_CARD, RateCard, UsageFigures, round_lines

Figures = Mapping[str, Mapping[str, UsageFigures]]  # period -> assistant -> figures


def period_start(period: str) -> dt.date:
    return dt.date(int(period[:4]), int(period[5:7]), 1)


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
