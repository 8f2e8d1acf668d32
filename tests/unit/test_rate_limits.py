from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simplytalk.errors import ConfigError, LimitReached
from simplytalk.http import error_response
from simplytalk.rate_limits import DEFAULT_LIMITS, InMemoryRateLimiter, Limit, admit, parse_limits

T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def test_the_limit_holds_in_a_window_and_the_next_window_starts_afresh() -> None:
    now = [T0]
    limiter = InMemoryRateLimiter({"scrape": Limit(3, 60)}, lambda: now[0])
    for _ in range(3):
        limiter.take("ann", "scrape")
    now[0] = T0 + dt.timedelta(seconds=20)

    with pytest.raises(LimitReached) as refused:
        limiter.take("ann", "scrape")
    limiter.take("bob", "scrape")  # per user

    assert refused.value.retry_after == 40
    body, status, headers = error_response(refused.value)
    assert status == 429 and headers["Retry-After"] == "40" and "RESOURCE_EXHAUSTED" in body
    now[0] = T0 + dt.timedelta(seconds=60)
    limiter.take("ann", "scrape")


@given(st.integers(1, 50), st.integers(1, 3600), st.lists(st.floats(0, 10_000), min_size=1, max_size=200))
def test_never_more_than_the_limit_in_any_window(count: int, per: int, offsets: list[float]) -> None:
    limit, state = Limit(count, per), None
    admitted: dict[int, int] = {}
    for now in sorted(offsets):
        new, retry_after = admit(state, limit, now)
        if retry_after is None:
            state = new
            admitted[int(now // per)] = admitted.get(int(now // per), 0) + 1
        else:
            assert 1 <= retry_after <= per
    assert all(n <= count for n in admitted.values())


def test_limits_are_configured_per_action() -> None:
    limits = parse_limits("scrape=5/600, call-start=1/1")

    assert limits["scrape"] == Limit(5, 600) and limits["call-start"] == Limit(1, 1)
    assert limits["setup-intent"] == DEFAULT_LIMITS["setup-intent"]
    for bad in ("nope=1/1", "scrape=x/1", "scrape=1/0", "scrape"):
        with pytest.raises(ConfigError):
            parse_limits(bad)
