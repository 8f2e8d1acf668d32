from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.charges import Unbilled, below_minimum, card_for, price, stripe_lines, unbilled
from simplytalk.invoice import InvoiceLine
from simplytalk.pricing import DEFAULT_RATE_CARD, RateCard, UsageFigures, round_half_up

CARD_2027 = RateCard("2027", dt.date(2027, 1, 1), 100, Decimal("30.5"))


def test_the_card_in_effect_on_the_first_day_prices_the_period() -> None:
    cards = [DEFAULT_RATE_CARD, CARD_2027, RateCard("mid-jan", dt.date(2027, 1, 15), 1, Decimal(1))]

    assert card_for("2026-12", cards) == DEFAULT_RATE_CARD
    assert card_for("2027-01", cards) == CARD_2027
    assert card_for("2027-02", cards).id == "mid-jan"
    assert card_for("2020-01", []) == DEFAULT_RATE_CARD


def test_late_usage_for_an_invoiced_period_lands_on_the_next_invoice() -> None:
    current = {"2026-10": {"a": UsageFigures(total_tokens=700)},
               "2026-11": {"a": UsageFigures(total_tokens=60)}}
    billed = {"2026-10": {"a": UsageFigures(total_tokens=600)}}

    items = unbilled(current, billed, {"a": "openai"}, "2026-11")

    assert items == [Unbilled("2026-10", "a", "openai", UsageFigures(total_tokens=100)),
                     Unbilled("2026-11", "a", "openai", UsageFigures(total_tokens=60))]
    assert unbilled(current, current, {}, "2026-11") == []  # billed everything: nothing again
    assert unbilled(current, {}, {}, "2026-10") == [Unbilled("2026-10", "a", "openai",
                                                             UsageFigures(total_tokens=700))]


def test_billing_more_than_counted_is_refused() -> None:
    with pytest.raises(ValueError):
        unbilled({"2026-10": {"a": UsageFigures(total_tokens=1)}},
                 {"2026-10": {"a": UsageFigures(total_tokens=2)}}, {}, "2026-10")


def test_the_roadmap_example_priced() -> None:
    invoice = price([Unbilled("2026-11", "a", "openai", UsageFigures(total_tokens=1830)),
                     Unbilled("2026-11", "v", "vapi", UsageFigures(vapi_call_millis=90_000))],
                    lambda p: DEFAULT_RATE_CARD)

    # 30.5 + 1.5 = 32 minutes at 45 cents = 1440 cents
    assert invoice.total == 1440
    assert [(line.assistant_id, line.minutes, line.amount) for line in invoice.lines] == [
        ("a", Fraction(61, 2), 1373), ("v", Fraction(3, 2), 67)]


figures = st.builds(UsageFigures, total_tokens=st.integers(0, 10**7), vapi_call_millis=st.integers(0, 10**8))


@given(st.lists(st.tuples(st.sampled_from(["2026-12", "2027-01", "2027-02"]), figures), max_size=30))
def test_lines_add_up_to_a_total_rounded_once(items: list[tuple[str, UsageFigures]]) -> None:
    unbilled_items = [Unbilled(p, f"a{i}", "openai", f) for i, (p, f) in enumerate(items)]
    cards = [DEFAULT_RATE_CARD, CARD_2027]

    invoice = price(unbilled_items, lambda p: card_for(p, cards))

    assert sum(line.amount for line in invoice.lines) == invoice.total
    exact = sum((f.minutes(card_for(p, cards)) * Fraction(card_for(p, cards).cents_per_minute)
                 for p, f in items), Fraction(0))
    assert invoice.total == round_half_up(exact)
    for line in invoice.lines:
        assert abs(line.amount - line.exact_cents) < 1


def test_of_two_cards_from_the_same_day_the_one_added_last_wins() -> None:
    day = dt.date(2027, 3, 1)
    first = RateCard("zz-first", day, 60, Decimal(10), added_at=dt.datetime(2027, 1, 5, tzinfo=dt.UTC))
    second = RateCard("aa-second", day, 60, Decimal(20), added_at=dt.datetime(2027, 1, 6, tzinfo=dt.UTC))

    assert card_for("2027-03", [second, first]).id == "aa-second"
    assert card_for("2027-03", [first, second, DEFAULT_RATE_CARD]).id == "aa-second"


def _lines(n: int, periods: int = 1) -> list[InvoiceLine]:
    return [InvoiceLine(f"a-{i}", "openai" if i % 2 else "vapi", f"2026-{10 + i % periods:02d}", Fraction(1), 7 + i,
                        "card") for i in range(n)]


def test_up_to_250_lines_go_to_stripe_one_per_assistant_and_period() -> None:
    sent = stripe_lines(_lines(250))

    assert [line.key for line in sent] == [str(i) for i in range(250)]
    assert sent[3].amount == 10 and sent[3].metadata == {"line": "3", "assistantId": "a-3", "usagePeriod": "2026-10"}


@given(st.integers(251, 600), st.integers(1, 3))
def test_past_stripes_cap_lines_are_grouped_and_add_up_to_the_same_total(n: int, periods: int) -> None:
    lines = _lines(n, periods)

    sent = stripe_lines(lines)

    assert len(sent) <= 2 * periods
    assert sum(line.amount for line in sent) == sum(line.amount for line in lines)
    assert len({line.key for line in sent}) == len(sent)


def test_stripe_does_not_collect_under_its_minimum_charge() -> None:
    assert below_minimum(49, "usd") and below_minimum(1, "usd")
    assert not below_minimum(50, "usd") and not below_minimum(0, "usd")
