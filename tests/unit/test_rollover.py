"""Year roll-over, the pure parts: which counter document an event adds to, and how the ledger's
year documents and a legacy all-years `billed` map combine."""

from __future__ import annotations

import datetime as dt

from simplytalk.charges import Unbilled, effective_billed, ledger_year, ledger_years_after, unbilled
from simplytalk.models import UsageEvent
from simplytalk.pricing import UsageFigures, period_of
from simplytalk.services.aggregation import SHARDS, Aggregate, shard_delta, shard_id, shard_of


def event(when: dt.datetime, tokens: int = 10, assistant: str = "a") -> UsageEvent:
    return UsageEvent.model_validate({"userId": "u", "assistantId": assistant, "provider": "openai",
                                      "occurredAt": when,
                                      "usage": {"totalTokens": tokens, "inputTokens": tokens, "outputTokens": 0}})


def f(tokens: int) -> UsageFigures:
    return UsageFigures(total_tokens=tokens)


def test_an_event_goes_to_a_shard_of_its_periods_year() -> None:
    assert shard_id("resp_1", "2026-12") == f"2026-{shard_of('resp_1')}"
    assert shard_id("resp_1", "2027-01") == f"2027-{shard_of('resp_1')}"
    ids = {shard_id(f"resp_{i}", "2027-01") for i in range(200)}
    assert ids == {f"2027-{k}" for k in range(SHARDS)}


def test_thirty_months_of_events_never_put_more_than_12_periods_in_a_shard() -> None:
    start = dt.datetime(2025, 7, 15, tzinfo=dt.UTC)
    shards: dict[str, Aggregate] = {}
    for month in range(30):
        when = start.replace(year=2025 + (6 + month) // 12, month=(6 + month) % 12 + 1)
        for i in range(20):
            event_id = f"resp_{month}_{i}"
            e = event(when)
            shards.setdefault(shard_id(event_id, f"{when:%Y-%m}"), Aggregate()).add_shard(shard_delta(e))
    assert max(len(a.periods) for a in shards.values()) <= 12
    assert {sid[:4] for sid in shards} == {"2025", "2026", "2027"}
    assert all(p[:4] == sid[:4] for sid, a in shards.items() for p in a.periods)


def test_a_year_document_wins_over_the_legacy_map_for_its_year_only() -> None:
    legacy = {"2025-11": {"a": f(5)}, "2025-12": {"a": f(7)}, "2026-01": {"a": f(1)}}
    years = {"2025": {"2025-12": {"a": f(9)}}, "2026": None}

    billed = effective_billed(legacy, years)

    # 2025 has a document: it is the whole record of 2025 (its November is not billed there)
    assert billed == {"2025-12": {"a": f(9)}, "2026-01": {"a": f(1)}}
    assert effective_billed(legacy, {}) == legacy  # no year documents yet: the legacy map as it was
    # a period filed under another year's document is not that year's record
    assert effective_billed({}, {"2026": {"2025-12": {"a": f(3)}}}) == {}


def test_late_december_usage_rewrites_last_years_document_and_this_years() -> None:
    current = {"2026-11": {"a": f(100)}, "2026-12": {"a": f(60), "b": f(5)}, "2027-01": {"a": f(30)}}
    billed = effective_billed({}, {"2026": {"2026-11": {"a": f(100)}, "2026-12": {"a": f(50)}}, "2027": None})
    items = unbilled(current, billed, {}, "2027-01")
    assert items == [Unbilled("2026-12", "a", "openai", f(10)), Unbilled("2026-12", "b", "openai", f(5)),
                     Unbilled("2027-01", "a", "openai", f(30))]

    after = ledger_years_after(billed, items, current)

    assert after == {"2026": {"2026-11": {"a": f(100)}, "2026-12": {"a": f(60), "b": f(5)}},  # absolute figures
                     "2027": {"2027-01": {"a": f(30)}}}
    assert unbilled(current, effective_billed({}, after), {}, "2027-01") == []  # billed once


def test_a_first_year_document_carries_the_legacy_figures_of_its_year_over() -> None:
    legacy = {"2026-10": {"a": f(40)}, "2026-11": {"a": f(70)}, "2025-12": {"a": f(3)}}
    current = {"2025-12": {"a": f(3)}, "2026-10": {"a": f(40)}, "2026-11": {"a": f(80)}}
    billed = effective_billed(legacy, {"2025": None, "2026": None})
    items = unbilled(current, billed, {}, "2026-11")

    after = ledger_years_after(billed, items, current)

    assert after == {"2026": {"2026-10": {"a": f(40)}, "2026-11": {"a": f(80)}}}
    assert ledger_year("2026-11") == "2026"


def test_a_legacy_shard_document_sums_with_year_shards() -> None:
    legacy = {"totals": {"totalTokens": 500}, "assistants": {"a": {"totalTokens": 500, "provider": "openai"}},
              "periods": {"2026-05": {"totalTokens": 500, "assistants": {"a": {"totalTokens": 500}}}}}
    aggregate = Aggregate()
    aggregate.add_shard(legacy)
    aggregate.add_shard(shard_delta(event(dt.datetime(2026, 5, 20, tzinfo=dt.UTC), 20)))
    aggregate.add_shard(shard_delta(event(dt.datetime(2027, 1, 2, tzinfo=dt.UTC), 3)))

    assert aggregate.totals.total_tokens == 523
    assert {p: x.total_tokens for p, x in aggregate.periods.items()} == {"2026-05": 520, "2027-01": 3}


def test_the_year_is_the_utc_year() -> None:
    new_years_eve_in_new_york = dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))

    assert shard_id("x", period_of(new_years_eve_in_new_york)).startswith("2027-")  # 04:30 UTC on 1 January
