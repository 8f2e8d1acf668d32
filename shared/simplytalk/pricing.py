"""Pricing, the billing core: usage -> minutes -> money. Pure: no I/O, no clock.

Exact arithmetic throughout: minutes are `Fraction`s (100 tokens at 60 a
minute is 5/3 minutes, which has no finite decimal), rates are `Decimal`s,
money is integer cents. Rounding happens once, half-up, where money is
finally produced, never per event.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal

from simplytalk.period import Period

Basis = Literal["tokens", "call-duration"]


@dataclass(frozen=True)
class RateCard:
    """What a minute costs and how OpenAI usage becomes minutes, from a date on."""

    id: str
    effective_from: dt.date
    tokens_per_minute: int
    cents_per_minute: Decimal
    currency: str = "usd"
    openai_basis: Basis = "tokens"  # or "call-duration": bill Realtime calls by their length
    added_at: dt.datetime | None = None  # breaks a tie on effective_from: the card added last wins

    def __post_init__(self) -> None:
        if self.tokens_per_minute <= 0:
            raise ValueError("tokens_per_minute must be positive")
        if not self.cents_per_minute.is_finite() or self.cents_per_minute < 0:
            raise ValueError("cents_per_minute must be a non-negative number")


# The roadmap's example card: 60 tokens = 1 minute, 45 US cents a minute.
DEFAULT_RATE_CARD = RateCard(id="default-2026-01", effective_from=dt.date(2026, 1, 1),
                             tokens_per_minute=60, cents_per_minute=Decimal(45))


def token_minutes(tokens: int, card: RateCard) -> Fraction:
    if tokens < 0:
        raise ValueError("tokens must not be negative")
    return Fraction(tokens, card.tokens_per_minute)


def call_minutes(call_millis: int) -> Fraction:
    """Call length in minutes; durations are kept as integer milliseconds."""
    if call_millis < 0:
        raise ValueError("call length must not be negative")
    return Fraction(call_millis, 60_000)


def seconds_to_millis(seconds: float | int | str | Decimal) -> int:
    """A provider's call seconds (often a float) as exact integer milliseconds, half-up."""
    value = Decimal(str(seconds))
    if not value.is_finite() or value < 0:
        raise ValueError("seconds must be a non-negative number")
    return int((value * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def round_half_up(value: Fraction) -> int:
    """Nearest integer, halves away from zero (value is never negative here)."""
    if value < 0:
        raise ValueError("amount must not be negative")
    return int((value * 2 + 1) // 2)


def cost_cents(minutes: Fraction, card: RateCard) -> int:
    """Exact minutes times the rate, rounded half-up to the cent once."""
    return round_half_up(minutes * Fraction(card.cents_per_minute))


def round_lines(exact: list[Fraction]) -> tuple[int, list[int]]:
    """Round a sum once and split it into whole cents that add up to it exactly.

    The total is the exact sum rounded half-up. Each line gets its exact amount
    rounded down, and the cents left over go to the lines with the largest
    remainders (ties: earlier first), so no line is a cent or more from its exact amount.
    """
    if any(e < 0 for e in exact):
        raise ValueError("amounts must not be negative")
    total = round_half_up(sum(exact, Fraction(0)))
    floors = [e.numerator // e.denominator for e in exact]
    left = total - sum(floors)  # 0 <= left <= len(exact)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return total, floors


def format_minutes(minutes: Fraction, places: int = 6) -> str:
    """For display only: a decimal string rounded half-up to `places`, no trailing zeros."""
    scaled = round_half_up(minutes * 10**places) if minutes >= 0 else -round_half_up(-minutes * 10**places)
    text = str(Decimal(scaled).scaleb(-places).quantize(Decimal(1).scaleb(-places)))
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def period_of(moment: dt.datetime) -> str:
    """The billing period (calendar month, UTC) a moment falls in: "YYYY-MM" (see `Period`)."""
    return str(Period.of(moment))


def valid_period(period: str) -> bool:
    return Period.is_valid(period)


@dataclass(frozen=True)
class UsageFigures:
    """Usage of one scope (a user or an assistant, all time or one period)."""

    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    openai_call_millis: int = 0
    vapi_call_millis: int = 0

    def __add__(self, other: UsageFigures) -> UsageFigures:
        return UsageFigures(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def __sub__(self, other: UsageFigures) -> UsageFigures:
        return UsageFigures(*(a - b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def is_zero(self) -> bool:
        return not any(self.astuple())

    def is_negative_anywhere(self) -> bool:
        return any(v < 0 for v in self.astuple())

    def astuple(self) -> tuple[int, int, int, int, int]:
        return (self.total_tokens, self.input_tokens, self.output_tokens, self.openai_call_millis,
                self.vapi_call_millis)

    def openai_minutes(self, card: RateCard) -> Fraction:
        if card.openai_basis == "call-duration":
            return call_minutes(self.openai_call_millis)
        return token_minutes(self.total_tokens, card)

    def vapi_minutes(self) -> Fraction:
        return call_minutes(self.vapi_call_millis)

    def minutes(self, card: RateCard) -> Fraction:
        return self.openai_minutes(card) + self.vapi_minutes()
