"""The rate limiter on the in-memory store: what it keeps, per user and per action."""

from __future__ import annotations

import datetime as dt

import pytest
from simplytalk.errors import LimitReached
from simplytalk.rate_limits import InMemoryRateLimits, Limit, Limiter

T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
LIMITS = {"scrape": Limit(2, 60), "call-start": Limit(1, 60)}


def limiter(store: InMemoryRateLimits, now: dt.datetime = T0) -> Limiter:
    return Limiter(store, LIMITS, lambda: now)


def test_each_admitted_request_is_counted_in_its_window() -> None:
    store = InMemoryRateLimits()

    limiter(store).take("ann", "scrape")
    limiter(store).take("ann", "scrape")

    window = int(T0.timestamp()) // 60 * 60
    assert store.state == {("ann", "scrape"): {"window": window, "count": 2}}


def test_a_refused_request_leaves_the_count_as_it_was() -> None:
    store = InMemoryRateLimits()
    limiter(store).take("ann", "call-start")
    before = dict(store.state)

    with pytest.raises(LimitReached) as refused:
        limiter(store, T0 + dt.timedelta(seconds=15)).take("ann", "call-start")

    assert refused.value.retry_after == 45 and store.state == before


def test_limits_are_per_user_and_per_action() -> None:
    store = InMemoryRateLimits()
    limiter(store).take("ann", "call-start")

    limiter(store).take("bob", "call-start")
    limiter(store).take("ann", "scrape")

    assert set(store.state) == {("ann", "call-start"), ("bob", "call-start"), ("ann", "scrape")}
