from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.pricing import (
    DEFAULT_RATE_CARD,
    RateCard,
    UsageFigures,
    call_minutes,
    cost_cents,
    format_minutes,
    period_of,
    round_half_up,
    round_lines,
    seconds_to_millis,
    token_minutes,
    valid_period,
)

tokens = st.integers(min_value=0, max_value=10**9)
cards = st.builds(
    RateCard, id=st.just("c"), effective_from=st.just(dt.date(2026, 1, 1)),
    tokens_per_minute=st.integers(min_value=1, max_value=10_000),
    cents_per_minute=st.decimals(min_value=0, max_value=10_000, places=4, allow_nan=False,
                                 allow_infinity=False),
)


def test_the_roadmaps_example() -> None:
    assert token_minutes(1830, DEFAULT_RATE_CARD) == Fraction(61, 2)  # 30.5 minutes
    assert format_minutes(token_minutes(1830, DEFAULT_RATE_CARD)) == "30.5"
    assert format_minutes(token_minutes(100, DEFAULT_RATE_CARD)) == "1.666667"
    assert cost_cents(token_minutes(1830, DEFAULT_RATE_CARD), DEFAULT_RATE_CARD) == 1373  # 13.725 -> 13.73 $


def test_vapi_seconds_are_exact() -> None:
    assert seconds_to_millis(90.5) == 90_500
    assert seconds_to_millis("0.0005") == 1
    assert call_minutes(seconds_to_millis(90)) == Fraction(3, 2)


@pytest.mark.parametrize(("value", "expected"), [
    (Fraction(1, 2), 1), (Fraction(3, 2), 2), (Fraction(5, 2), 3), (Fraction(49, 100), 0), (Fraction(0), 0)])
def test_half_up(value: Fraction, expected: int) -> None:
    assert round_half_up(value) == expected


@given(st.lists(tokens, max_size=50), cards)
def test_minutes_of_the_sum_are_the_sum_of_minutes(events: list[int], card: RateCard) -> None:
    assert token_minutes(sum(events), card) == sum((token_minutes(t, card) for t in events), Fraction(0))


@given(st.fractions(min_value=0, max_value=10**7), cards)
def test_cost_is_within_half_a_cent_of_exact(minutes: Fraction, card: RateCard) -> None:
    exact = minutes * Fraction(card.cents_per_minute)

    assert abs(cost_cents(minutes, card) - exact) <= Fraction(1, 2)


@given(tokens, tokens, cards)
def test_more_usage_never_costs_less(a: int, b: int, card: RateCard) -> None:
    low, high = sorted((a, b))

    assert cost_cents(token_minutes(low, card), card) <= cost_cents(token_minutes(high, card), card)


@given(st.lists(st.fractions(min_value=0, max_value=10**6), max_size=30))
def test_lines_add_up_to_the_total_rounded_once_and_stay_within_a_cent(exact: list[Fraction]) -> None:
    total, lines = round_lines(exact)

    assert total == round_half_up(sum(exact, Fraction(0)))
    assert sum(lines) == total
    for line, amount in zip(lines, exact, strict=True):
        assert abs(line - amount) < 1


@given(st.fractions(min_value=0, max_value=10**9))
def test_displayed_minutes_are_within_rounding_of_exact(minutes: Fraction) -> None:
    shown = format_minutes(minutes)

    assert abs(Fraction(Decimal(shown)) - minutes) <= Fraction(1, 2 * 10**6)
    assert not shown.endswith(".") and (("." not in shown) or not shown.endswith("0"))


def test_call_duration_basis_bills_openai_by_call_length() -> None:
    card = RateCard("by-call", dt.date(2026, 1, 1), 60, Decimal(45), openai_basis="call-duration")
    usage = UsageFigures(total_tokens=6000, openai_call_millis=120_000, vapi_call_millis=30_000)

    assert usage.minutes(card) == Fraction(5, 2)
    assert usage.minutes(DEFAULT_RATE_CARD) == Fraction(201, 2)


def test_periods_are_utc_calendar_months() -> None:
    east = dt.timezone(dt.timedelta(hours=5))

    assert period_of(dt.datetime(2026, 3, 1, 2, 0, tzinfo=east)) == "2026-02"
    assert period_of(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)) == "2026-12"
    with pytest.raises(ValueError):
        period_of(dt.datetime(2026, 1, 1))
    assert valid_period("2026-01") and not valid_period("2026-13") and not valid_period("26-01")


def test_bad_cards_are_refused() -> None:
    with pytest.raises(ValueError):
        RateCard("x", dt.date(2026, 1, 1), 0, Decimal(1))
    with pytest.raises(ValueError):
        RateCard("x", dt.date(2026, 1, 1), 60, Decimal("-1"))


def test_events_no_counter_can_hold_are_told_apart_from_real_ones() -> None:
    import datetime as dt

    from simplytalk.models import UsageEvent
    from simplytalk.services.aggregation import uncountable

    def event(**fields: object) -> UsageEvent:
        return UsageEvent.model_validate({"userId": "u", "assistantId": "a", "occurredAt": dt.datetime.now(dt.UTC),
                                         **fields})

    assert uncountable(event(provider="vapi", callSeconds=43200), 43200) is None
    assert "over 43200" in (uncountable(event(provider="vapi", callSeconds=43200.5), 43200) or "")
    assert "over" in (uncountable(event(provider="openai", callSeconds=float("inf")), 43200) or "")
    assert "outside" in (uncountable(event(provider="openai", usage={"totalTokens": 10**16}), 43200) or "")
    assert uncountable(event(provider="openai", usage={"totalTokens": 300}), 43200) is None
