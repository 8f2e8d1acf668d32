from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.period import Period

periods = st.builds(Period, st.integers(1970, 9998), st.integers(1, 12))


@pytest.mark.parametrize("text", ["2026-1", "2026-13", "²²²²-11", "1969-12", "2026/11", " 2026-11", "2026-00", ""])
def test_only_a_real_month_parses(text: str) -> None:
    assert not Period.is_valid(text)
    with pytest.raises(ValueError):
        Period.parse(text)


@given(periods)
def test_a_period_reads_back_from_its_text(period: Period) -> None:
    assert Period.parse(str(period)) == period


@given(periods)
def test_next_and_previous_are_neighbours_in_time(period: Period) -> None:
    assert period.next().previous() == period
    assert period.next() > period and period.next().start > period.start
    assert (period.next().start - period.start).days in (28, 29, 30, 31)


def test_a_moment_falls_in_its_utc_month() -> None:
    assert str(Period.of(dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-1))))) == "2027-01"
    assert Period(2027, 1).previous() == Period(2026, 12) and Period(2026, 12).year_key == "2026"
    with pytest.raises(ValueError):
        Period.of(dt.datetime(2026, 1, 1))  # no time zone
