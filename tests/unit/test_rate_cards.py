from __future__ import annotations

import datetime as dt

import pytest
from simplytalk.errors import InvalidInput
from simplytalk.services.rate_cards import effective_date

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def test_a_card_takes_effect_next_month_unless_told_a_later_month() -> None:
    assert effective_date(None, NOW) == dt.date(2026, 12, 1)
    assert effective_date(dt.date(2027, 3, 1), NOW) == dt.date(2027, 3, 1)
    assert effective_date(None, dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)) == dt.date(2027, 1, 1)


@pytest.mark.parametrize("requested", [dt.date(2026, 11, 1), dt.date(2026, 10, 1), dt.date(2026, 12, 15),
                                       dt.date(2026, 11, 27)])
def test_a_card_never_reprices_the_current_month_or_the_past(requested: dt.date) -> None:
    with pytest.raises(InvalidInput) as refused:
        effective_date(requested, NOW)

    assert [v.field for v in refused.value.details] == ["effectiveFrom"]
